//! deepguard-runtime: a transparent decoder-only transformer for real code LLMs.
//!
//! - [`model::Model::load`] reads a GGUF file (weights stay quantized) or a Hugging Face folder.
//! - [`decoder::Decoder::forward`] exposes every block's output, a residual-stream hook and a
//!   differentiable mode with LoRA adapters ([`lora`]) for training.
//! - [`generate::generate`] decodes n samples of one prompt as a batch over a shared prefill,
//!   with logits processors applied at every step; [`decoder::Decoder::forward_ragged`] runs
//!   several requests at different positions in one pass (continuous batching in the server).

pub mod chat;
pub mod config;
pub mod decoder;
pub mod files;
pub mod frozen;
pub mod generate;
pub mod gguf;
pub mod hooks;
pub mod kernels;
pub mod kv_cache;
pub mod lora;
pub mod model;
pub mod models;
pub mod profile;
pub mod progress;
pub mod rng;
pub mod testing;
pub mod tokenizer;

pub use config::{Arch, ModelConfig};
pub use decoder::{Decoder, ForwardOpts, ForwardOutput, LayerSelect, LogitsSelect};
pub use model::Model;
