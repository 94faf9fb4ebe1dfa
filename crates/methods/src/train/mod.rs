//! DeepGuard training: LoRA adapters, the multi-layer aggregator and the security analyzer,
//! trained together on paired secure / vulnerable code.
//!
//! One optimizer step, for each pair of the batch (read [`Trainer::pair`]):
//! ```text
//! secure side:     top blocks with adapters -> h_top, final norm z      (gradients on)
//!                  L_gen, L_kl from the head on z (reference: the same blocks, adapters off)
//!                  S_sec = mean_i analyzer(aggregator(layers), token_i)
//! vulnerable side: top blocks with adapters, detached -> S_vul         (trains the heads only)
//! L = L_gen + w_sec * max(0, delta - (S_sec - S_vul)) + w_kl * min(1, L_kl)
//! ```
//! then AdamW with clipping, warm-up and linear decay. The blocks below the first adapted one
//! never change, so their outputs come from the feature cache ([`crate::features`]).
//!
//! Differences from the reference code, all documented in `docs/deepguard.md`: adapters on the
//! top blocks only (default 2; `--lora-layers all` restores the reference), windows of the
//! function around the change instead of truncation at 1024 tokens, pairs processed one at a
//! time (batch x accumulation pairs per step, no padding), losses averaged per pair, and a
//! separate learning rate for the freshly initialised aggregator and analyzer.

//!
//! One module per job: [`run`] (the run loop, one function per phase), [`step`] (the training
//! step on one pair), [`validate`] (validation and its summary line), [`checkpoint`] (run state,
//! atomic checkpoints, resume), [`metrics`] (metrics.jsonl and the loss plot); this file holds
//! the settings.

mod checkpoint;
mod metrics;
mod run;
pub mod step;
pub mod validate;

pub use checkpoint::RunState;
pub use metrics::write_loss_plot;
pub use run::train;
pub use step::{PairOut, Trainer};
pub use validate::{val_line, validate, ValStats};

use crate::aggregator::Mode;
use crate::optim::AdamWConfig;
use crate::prior::PriorRule;
use deepguard_runtime::lora::LoraConfig;
use deepguard_runtime::Model;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Token budget per side (window centred on the changed span); 0 = whole functions.
    pub window: usize,
    pub aggregator: Mode,
    /// N, the number of top layers the aggregator reads.
    pub agg_layers: usize,
    /// None: analyzer-only (no adapters; the model stays frozen and only the aggregator and the
    /// analyzer learn, from cached features).
    pub lora: Option<LoraConfig>,
    pub w_gen: f64,
    pub w_sec: f64,
    pub w_kl: f64,
    pub margin: f64,
    pub kl_clamp: f64,
    /// Learning rate of the adapters.
    pub lr: f64,
    /// Learning rate of the aggregator and the analyzer.
    pub head_lr: f64,
    pub adamw: AdamWConfig,
    pub batch: usize,
    pub accum: usize,
    /// Fraction of the steps used for linear warm-up.
    pub warmup: f64,
    pub clip: f64,
    pub epochs: usize,
    /// Early stopping: epochs without a better validation loss before stopping.
    pub patience: usize,
    pub seed: u64,
    pub prior: PriorRule,
    /// Tokens of each function counted for the prior (the reference truncates at 1024).
    pub max_len: usize,
}

impl TrainConfig {
    /// The reference settings (`../shared/docs/REFERENCE.md` §1, beside the repository) for a
    /// model, adapters on its top `top` blocks.
    pub fn reference(model: &Model, top: usize) -> Self {
        let n = model.cfg().n_layers;
        let top = top.min(n);
        Self {
            window: 128,
            aggregator: Mode::Attention,
            agg_layers: 4,
            lora: Some(LoraConfig {
                rank: 16,
                alpha: 32.0,
                dropout: 0.1,
                targets: crate::guard::default_targets(model.cfg().arch),
                layers: (n - top..n).collect(),
                seed: 42,
            }),
            w_gen: 1.0,
            w_sec: 0.5,
            w_kl: 1.0,
            margin: 0.5,
            kl_clamp: 1.0,
            lr: 2e-5,
            head_lr: 1e-3,
            adamw: AdamWConfig::default(),
            batch: 8,
            accum: 2,
            warmup: 0.1,
            clip: 1.0,
            epochs: 5,
            patience: 3,
            seed: 42,
            prior: PriorRule::Counts { smoothing: 5.0 },
            max_len: 1024,
        }
    }

    /// First adapted block (= number of frozen blocks whose outputs are cached).
    pub fn from_layer(&self, n_layers: usize) -> usize {
        match &self.lora {
            Some(l) if l.layers.is_empty() => 0,
            Some(l) => l.layers.iter().copied().min().unwrap_or(n_layers),
            None => n_layers,
        }
    }

    pub fn pairs_per_step(&self) -> usize {
        (self.batch * self.accum).max(1)
    }
}

/// Where and how a run goes (as opposed to what it learns, [`TrainConfig`]).
pub struct RunOptions {
    pub out: PathBuf,
    pub resume: bool,
    /// Feature cache folder (None: in memory only).
    pub cache: Option<PathBuf>,
    pub progress: bool,
    /// Checkpoint every this many optimizer steps (and at every epoch end).
    pub checkpoint_every: usize,
    pub val_at_start: bool,
    /// Stop after this many optimizer steps in this invocation (tests of resumption).
    pub max_steps: Option<usize>,
    /// Only compute the feature cache.
    pub features_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub state: RunState,
    pub train_pairs: usize,
    pub val_pairs: usize,
    pub features_secs: f64,
    pub steps_per_epoch: usize,
    pub params_adapters: usize,
    pub params_heads: usize,
    pub last_val: Option<ValStats>,
    pub first_val: Option<ValStats>,
}
