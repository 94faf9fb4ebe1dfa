//! Per-CWE steering vectors (Surgical Repair): v = mean(h_L | secure) - mean(h_L | vulnerable).
//!
//! - [`file`]: a vector and its file in llama.cpp's control-vector GGUF layout; which vectors
//!   `--steer` names;
//! - [`build`]: building the vectors from activations, the default strength and layer, the
//!   layer choice from a probe;
//! - [`route`]: probe-then-steer routing and the hooks a steering spec applies to a prompt;
//! - [`sweep`]: the layer x alpha sweep on validation pairs.
//!
//! Position: SVEN pairs are functions, not prompts. The representation of a side is the output of
//! block L at the last token of its window, and windows end with the last changed token
//! ([`crate::data::Align::End`]): the point where the model has just written the secure or the
//! vulnerable code, the closest analogue of the paper's "last prompt token" before the model
//! commits to a continuation. Applied at generation time from the last prompt token on.
//!
//! Layer numbering: llama.cpp stores `direction.N` at offset (N-1)*n_embd of its control-vector
//! buffer, copies it into `tensors[N]`, and adds `tensors[il]` after block `il` (`build_cvec(cur,
//! il)` at the end of each layer); `direction.0` is refused. So `direction.N` is the output of
//! block N (0-based), the same index as [`deepguard_runtime::hooks::AddVector::layer`]; block 0
//! cannot be expressed and is refused here too.

pub mod build;
pub mod file;
pub mod route;
pub mod sweep;

pub use build::{build, choose_layer, default_layer, mean_difference, DEFAULT_ALPHA};
pub use file::{file_name, load_selected, parse_steer_arg, Selector, SteerVector};
pub use route::{hooks_for, route, route_cwe, Route};
pub use sweep::{best_cell, sweep, SweepCell};
