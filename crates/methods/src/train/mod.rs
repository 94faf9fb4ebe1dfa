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
//! One module per job: [`step`] (the training step on one pair), [`validate`] (validation and its
//! summary line), [`checkpoint`] (run state, atomic checkpoints, resume), [`metrics`]
//! (metrics.jsonl and the loss plot); this file holds the settings and the run loop.

mod checkpoint;
mod metrics;
pub mod step;
pub mod validate;

pub use checkpoint::RunState;
pub use metrics::write_loss_plot;
pub use step::{PairOut, Trainer};
pub use validate::{val_line, validate, ValStats};

use crate::aggregator::{top_layers, Aggregator, Mode};
use crate::analyzer::Analyzer;
use crate::data::{pairs_hash, Align, Pair, WindowSpec};
use crate::features::{self, FeatureSpec};
use crate::guard::{Guard, GuardMeta};
use crate::optim::{lr_factor, AdamW, AdamWConfig, Group};
use crate::params::Params;
use crate::prior::{t_stats, PriorRule};
use deepguard_runtime::files::write_atomic;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use deepguard_runtime::lora::LoraConfig;
use deepguard_runtime::rng::SplitMix;
use deepguard_runtime::Model;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use checkpoint::{load_checkpoint, save_checkpoint, CHECKPOINT};
use metrics::Metrics;
use step::step_profile;
use validate::bar;

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
    /// The reference settings (REFERENCE.md §1) for a model, adapters on its top `top` blocks.
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

/// Losses and scores of one pair.

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

/// Full training run: features, T_stats, epochs with validation, checkpoints, artefacts.
pub fn train(model: &mut Model, train_pairs: &[Pair], val_pairs: &[Pair], cfg: &TrainConfig, run: &RunOptions) -> Result<TrainReport> {
    if train_pairs.is_empty() {
        bail!("no training pairs");
    }
    let n_layers = model.cfg().n_layers;
    // Blocks from `from` up run with dense weights in every step; below, features are cached.
    // Never above block L-2, so that the ablations (`--analyzer-only`, other aggregator modes,
    // adapters on the top 2 blocks) share one feature cache.
    let from = cfg.from_layer(n_layers).min(n_layers.saturating_sub(2));
    let layers = top_layers(n_layers, cfg.agg_layers, cfg.aggregator)?;
    let cached_layers = top_layers(n_layers, cfg.agg_layers, Mode::Attention)?;
    std::fs::create_dir_all(&run.out).with_context(|| format!("cannot create {}", run.out.display()))?;
    let data_hash = pairs_hash(train_pairs, &format!("train;{}", pairs_hash(val_pairs, "val")));

    let resumed = if run.resume { load_checkpoint(&run.out)? } else { None };
    if run.resume && resumed.is_none() {
        eprintln!("no checkpoint in {}: starting from scratch", run.out.display());
    }
    if let Some((st, _)) = &resumed {
        if &st.config != cfg {
            bail!("{}: the checkpoint was written with other settings; resume with the same options or use another --out", run.out.join(CHECKPOINT).display());
        }
        if st.data_hash != data_hash {
            bail!("{}: the checkpoint was trained on other data", run.out.join(CHECKPOINT).display());
        }
    } else if run.out.join(CHECKPOINT).exists() && !run.features_only {
        bail!("{} already holds a training run: pass --resume to continue it, or choose another --out", run.out.display());
    }

    // 1. Frozen features (dense weights from `from` up, as the training forward uses them).
    model.decoder.detach_lora();
    model.decoder.prepare_for_training(from)?;
    let t0 = Instant::now();
    let spec = FeatureSpec { window: WindowSpec { budget: cfg.window, align: Align::Center, equal_length: false }, from, layers: cached_layers };
    let train_ex = features::collect(model, train_pairs, &spec, run.cache.as_deref(), "train", run.progress)?;
    let val_ex = features::collect(model, val_pairs, &spec, run.cache.as_deref(), "val", run.progress)?;
    let features_secs = t0.elapsed().as_secs_f64();
    if run.features_only {
        return Ok(TrainReport { state: RunState::fresh(cfg, &data_hash), train_pairs: train_ex.len(), val_pairs: val_ex.len(), features_secs, steps_per_epoch: 0, params_adapters: 0, params_heads: 0, last_val: None, first_val: None });
    }

    // 2. T_stats from whole functions (up to max_len tokens).
    let mut tok_pairs = Vec::with_capacity(train_pairs.len());
    for p in train_pairs {
        let enc = |s: &str| -> Result<Vec<u32>> { Ok(model.tokenizer.encode(s)?.into_iter().take(cfg.max_len).collect()) };
        tok_pairs.push((enc(&p.fixed)?, enc(&p.vulnerable)?));
    }
    let t_stats = t_stats(&tok_pairs, model.cfg().vocab_size, cfg.prior)?;

    // 3. Parameters.
    let adapters = match &cfg.lora {
        Some(l) => {
            let mut p = Params::default();
            for (k, v) in model.decoder.attach_lora(l)? {
                p.insert(k, v);
            }
            p
        }
        None => Params::default(),
    };
    let dev = model.decoder.device().clone();
    let aggregator = Aggregator::new(cfg.aggregator, layers.clone(), model.cfg().hidden_size, SplitMix::derive(cfg.seed, 100), &dev)?;
    let analyzer = Analyzer::new(model.cfg().hidden_size, model.cfg().vocab_size, SplitMix::derive(cfg.seed, 200), &dev)?;
    let mut heads = aggregator.params();
    heads.extend("", &analyzer.params());
    let mut all = adapters.clone();
    all.extend("", &heads);
    let mut opt = AdamW::new(cfg.adamw, vec![Group { params: adapters.clone(), lr: cfg.lr }, Group { params: heads.clone(), lr: cfg.head_lr }]);
    let model: &Model = model;
    let head_w = model.decoder.lm_head.dense_weight()?;
    let tr = Trainer { model, cfg: cfg.clone(), aggregator, analyzer, from, head_w, adapters: adapters.clone() };
    let meta = GuardMeta {
        model_fingerprint: model.info.fingerprint.clone(),
        model_arch: format!("{:?}", model.cfg().arch).to_lowercase(),
        n_layers,
        hidden: model.cfg().hidden_size,
        vocab: model.cfg().vocab_size,
        aggregator: cfg.aggregator,
        layers: layers.clone(),
        lora: cfg.lora.clone(),
        prior_rule: serde_json::to_string(&cfg.prior)?,
        data_hash: data_hash.clone(),
        settings: serde_json::to_value(cfg)?,
    };
    let save_guard = |tr: &Trainer| -> Result<()> {
        let g = Guard { meta: meta.clone(), aggregator: tr.aggregator.clone(), analyzer: tr.analyzer.clone(), t_stats: t_stats.clone(), adapters: Default::default() };
        g.save(&run.out, tr.model, &tr.adapters)
    };

    // 4. State: fresh or from the checkpoint.
    let metrics_path = run.out.join("metrics.jsonl");
    let (mut st, mut metrics) = match resumed {
        Some((st, t)) => {
            let p: std::collections::HashMap<String, Tensor> = t.iter().filter_map(|(k, v)| k.strip_prefix("p.").map(|n| (n.to_string(), v.clone()))).collect();
            all.load(&p, "checkpoint")?;
            opt.load_state(&t, st.step);
            let m = Metrics::open(&metrics_path, Some(st.metrics_lines))?;
            eprintln!("resuming at step {} (epoch {}, step {} of the epoch)", st.step, st.epoch + 1, st.epoch_step);
            (st, m)
        }
        None => (RunState::fresh(cfg, &data_hash), Metrics::open(&metrics_path, None)?),
    };
    let spe = train_ex.len().div_ceil(cfg.pairs_per_step());
    let report = |state: RunState, last_val: Option<ValStats>, first_val: Option<ValStats>| TrainReport {
        state,
        train_pairs: train_ex.len(),
        val_pairs: val_ex.len(),
        features_secs,
        steps_per_epoch: spe,
        params_adapters: adapters.count(),
        params_heads: heads.count(),
        last_val,
        first_val,
    };
    let total_steps = spe * cfg.epochs;
    let warmup = ((cfg.warmup * total_steps as f64).ceil() as usize).max(1);
    let mut first_val = None;
    if st.step == 0 && st.epoch_step == 0 && run.val_at_start && !val_ex.is_empty() {
        let v = validate(&tr, &val_ex, run.progress)?;
        eprintln!("{}", val_line("before training", &v));
        metrics.log(serde_json::json!({"val": true, "epoch": 0, "step": 0, "stats": v}))?;
        st.history.push(serde_json::json!({"epoch": 0, "val": v}));
        first_val = Some(v);
        st.metrics_lines = metrics.lines;
    }

    // 5. Epochs.
    let mut steps_here = 0usize;
    let mut last_val = None;
    while st.epoch < cfg.epochs && !st.stopped {
        let mut order: Vec<usize> = (0..train_ex.len()).collect();
        SplitMix(SplitMix::derive(cfg.seed, 1000 + st.epoch as u64)).shuffle(&mut order);
        let pb = run.progress.then(|| bar(train_ex.len() as u64, &format!("epoch {}/{}", st.epoch + 1, cfg.epochs)));
        if let Some(b) = &pb {
            b.set_position((st.epoch_step * cfg.pairs_per_step()).min(train_ex.len()) as u64);
        }
        let t_epoch = Instant::now();
        while st.epoch_step < spe {
            if run.max_steps.is_some_and(|m| steps_here >= m) {
                if let Some(b) = pb {
                    b.finish();
                }
                save_checkpoint(&run.out, &st, &all, &opt)?;
                step_profile::report(steps_here * cfg.pairs_per_step());
                return Ok(report(st, last_val, first_val));
            }
            let t_step = Instant::now();
            let idx = &order[st.epoch_step * cfg.pairs_per_step()..((st.epoch_step + 1) * cfg.pairs_per_step()).min(order.len())];
            let scale = 1.0 / idx.len() as f64;
            let mut sum = PairOut::default();
            for (j, &i) in idx.iter().enumerate() {
                let seed = SplitMix::derive(cfg.seed, (st.step as u64) << 20 | j as u64);
                let (o, g) = tr.pair(&train_ex[i], Some(seed), Some(scale)).with_context(|| format!("training pair {}", train_ex[i].source))?;
                {
                    let _p = step_profile::span(6);
                    opt.accumulate(&g.expect("gradients"))?;
                }
                sum.gen += o.gen * scale;
                sum.kl += o.kl * scale;
                sum.sec += o.sec * scale;
                if let Some(b) = &pb {
                    b.inc(1);
                }
            }
            let factor = lr_factor(st.step, warmup, total_steps);
            let gnorm = {
                let _p = step_profile::span(6);
                opt.step(factor, cfg.clip)?
            };
            st.step += 1;
            st.epoch_step += 1;
            steps_here += 1;
            let secs = t_step.elapsed().as_secs_f64();
            st.train_secs += secs;
            metrics.log(serde_json::json!({
                "step": st.step, "epoch": st.epoch + 1, "lr": cfg.lr * factor, "head_lr": cfg.head_lr * factor,
                "loss": sum.total(cfg), "gen": sum.gen, "sec": sum.sec, "kl": sum.kl, "grad_norm": gnorm, "secs": secs,
            }))?;
            st.metrics_lines = metrics.lines;
            if let Some(b) = &pb {
                b.set_message(format!("step {}/{}  loss {:.3}  gen {:.3}  sec {:.3}  kl {:.4}", st.step, total_steps, sum.total(cfg), sum.gen, sum.sec, sum.kl));
            }
            if run.checkpoint_every > 0 && st.step % run.checkpoint_every == 0 && st.epoch_step < spe {
                save_checkpoint(&run.out, &st, &all, &opt)?;
            }
        }
        if let Some(b) = pb {
            b.finish();
        }
        // Epoch end: validation, best artefacts, early stopping.
        let v = validate(&tr, &val_ex, run.progress)?;
        eprintln!("{}  ({:.0}s)", val_line(&format!("epoch {}", st.epoch + 1), &v), t_epoch.elapsed().as_secs_f64());
        metrics.log(serde_json::json!({"val": true, "epoch": st.epoch + 1, "step": st.step, "stats": v}))?;
        st.history.push(serde_json::json!({"epoch": st.epoch + 1, "val": v, "epoch_secs": t_epoch.elapsed().as_secs_f64()}));
        if val_ex.is_empty() || st.best_val.is_none_or(|b| v.loss < b) {
            st.best_val = Some(v.loss);
            st.best_epoch = Some(st.epoch + 1);
            st.bad_epochs = 0;
            save_guard(&tr)?;
        } else {
            st.bad_epochs += 1;
            if st.bad_epochs >= cfg.patience {
                eprintln!("early stop: no better validation loss for {} epochs", cfg.patience);
                st.stopped = true;
            }
        }
        last_val = Some(v);
        st.epoch += 1;
        st.epoch_step = 0;
        st.metrics_lines = metrics.lines;
        save_checkpoint(&run.out, &st, &all, &opt)?;
    }
    step_profile::report(steps_here * cfg.pairs_per_step());
    write_loss_plot(&metrics_path, &run.out.join("loss.svg"))?;
    let report = report(st, last_val, first_val);
    write_atomic(&run.out.join("train_report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

