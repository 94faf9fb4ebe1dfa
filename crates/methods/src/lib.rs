//! deepguard's methods on top of the runtime.
//!
//! Surgical Repair:
//! - [`data`]: paired vulnerable / fixed code (SVEN, SafeCoder) and token windows around the change.
//! - [`probe`]: layer-wise representations, logistic-regression probes, length baselines.
//! - [`steer`]: per-CWE steering vectors, their GGUF files, the hook, the sweep.
//! - [`steer_instruct`]: the paper's vectors: secure vs insecure instruction at the last prompt token.
//!
//! DeepGuard:
//! - [`aggregator`]: attention over the top layers' hidden states (and the `mean` / `last` ablations).
//! - [`analyzer`]: token security embedding + MLP, per-token scores, masked sequence score.
//! - [`losses`]: L_gen, L_kl (closed-form head gradient) and the margin loss L_sec.
//! - [`prior`]: T_stats and the inference-time logit bias.
//! - [`features`]: the frozen lower blocks run once per example, cached on disk.
//! - [`train`]: the training loop (AdamW from [`optim`], checkpoints, validation, artefacts).
//! - [`guard`]: a trained guard on disk (PEFT adapters + heads) and its use at inference.
//! - [`spec`]: one description of a method (guard, steering, prompt variant, rerank; `FromStr` +
//!   `Display`), shared by the command line, `compare`, config files and the server.
//! - [`guided`]: a spec as one generation method (`deepguard_runtime::generate::Method`).
//! - [`scan`]: token scores of a source file, for a terminal or an HTML page.
//! - [`diagnostics`]: the analyzer on whole and length-matched pairs, s̄_prompt's spread, routing.
//! - [`params`]: named parameters and the small differentiable layers the heads use.
//!
//! [`plot`]: small hand-written SVG charts for the reports; [`progress`]: bars, or log lines.

pub mod aggregator;
pub mod analyzer;
pub mod data;
pub mod diagnostics;
pub mod features;
pub mod guard;
pub mod guided;
pub mod losses;
pub mod optim;
pub mod params;
pub mod plot;
pub mod prior;
pub mod probe;
pub use deepguard_runtime::progress;
pub mod scan;
pub mod spec;
pub mod steer;
pub mod steer_instruct;
pub mod train;
