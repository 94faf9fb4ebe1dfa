//! deepguard's methods on top of the runtime.
//!
//! - [`data`]: paired vulnerable / fixed code (SVEN, SafeCoder) and token windows around the change.
//! - [`probe`]: layer-wise representations, logistic-regression probes, length baselines.
//! - [`steer`]: per-CWE steering vectors (Surgical Repair), their GGUF files, the hook, the sweep.
//! - [`plot`]: small hand-written SVG charts for the reports.

pub mod data;
pub mod plot;
pub mod probe;
pub mod steer;
