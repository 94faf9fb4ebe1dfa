//! The training run, one function per phase: [`train`] opens (or resumes) the run folder,
//! collects the frozen features, counts the prior's T_stats, builds the trainable parameters,
//! restores or starts the run state, then runs epochs (optimizer steps, validation, the best
//! artefacts, early stopping, checkpoints) and writes the final artefacts.

use super::checkpoint::{load_checkpoint, save_checkpoint, CHECKPOINT};
use super::metrics::{write_loss_plot, Metrics};
use super::step::{step_profile, PairOut, Trainer};
use super::validate::{bar, val_line, validate, ValStats};
use super::{RunOptions, RunState, TrainConfig, TrainReport};
use crate::aggregator::{top_layers, Aggregator, LayerRef, Mode};
use crate::analyzer::Analyzer;
use crate::data::{pairs_hash, Align, Pair, WindowSpec};
use crate::features::{self, Example, FeatureSpec};
use crate::guard::{Guard, GuardMeta};
use crate::optim::{lr_factor, AdamW, Group};
use crate::params::Params;
use crate::prior::t_stats;
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use deepguard_runtime::files::write_atomic;
use deepguard_runtime::rng::SplitMix;
use deepguard_runtime::Model;
use std::collections::HashMap;
use std::time::Instant;

/// A checkpoint read back: the run state and the saved tensors by name.
type Resumed = (RunState, HashMap<String, Tensor>);

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
    let resumed = open_run(run, cfg, &data_hash)?;

    let feats = frozen_features(model, train_pairs, val_pairs, run, FeatureSpec { window: WindowSpec { budget: cfg.window, align: Align::Center, equal_length: false }, from, layers: cached_layers })?;
    if run.features_only {
        let (train_pairs, val_pairs) = (feats.train.len(), feats.val.len());
        return Ok(TrainReport { state: RunState::fresh(cfg, &data_hash), train_pairs, val_pairs, features_secs: feats.secs, steps_per_epoch: 0, params_adapters: 0, params_heads: 0, last_val: None, first_val: None });
    }
    let t_stats = prior_stats(model, train_pairs, cfg)?;
    let adapters = attach_adapters(model, cfg)?;
    let model: &Model = model;
    let learner = Learner::new(model, cfg, from, &layers, adapters)?;
    let meta = guard_meta(model, cfg, &layers, &data_hash, train_pairs)?;

    let (mut s, mut st) = Session::start(learner, resumed, cfg, run, feats, meta, t_stats, &data_hash)?;
    let first_val = s.validate_at_start(&mut st)?;
    let mut steps_here = 0usize;
    let mut last_val = None;
    while st.epoch < cfg.epochs && !st.stopped {
        match s.epoch(&mut st, &mut steps_here)? {
            Some(v) => last_val = Some(v),
            None => {
                // Stopped by `max_steps` inside the epoch: a checkpoint to resume from.
                save_checkpoint(&run.out, &st, &s.learner.all, &s.learner.opt)?;
                step_profile::report(steps_here * cfg.pairs_per_step());
                return Ok(s.report(st, last_val, first_val));
            }
        }
    }
    step_profile::report(steps_here * cfg.pairs_per_step());
    write_loss_plot(&s.metrics_path(), &run.out.join("loss.svg"))?;
    let report = s.report(st, last_val, first_val);
    write_atomic(&run.out.join("train_report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

/// The checkpoint to resume from, if `--resume` and there is one; refuses a run folder that
/// holds another run (other settings, other data, or a run not asked to be resumed).
fn open_run(run: &RunOptions, cfg: &TrainConfig, data_hash: &str) -> Result<Option<Resumed>> {
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
    Ok(resumed)
}

/// The frozen blocks' outputs for every training and validation pair.
struct Features {
    train: Vec<Example>,
    val: Vec<Example>,
    secs: f64,
}

/// Phase 1: the frozen features, read with dense weights from `spec.from` up (as the training
/// forward uses them) and no adapters.
fn frozen_features(model: &mut Model, train_pairs: &[Pair], val_pairs: &[Pair], run: &RunOptions, spec: FeatureSpec) -> Result<Features> {
    model.decoder.detach_lora();
    model.decoder.prepare_for_training(spec.from)?;
    let t0 = Instant::now();
    let train = features::collect(model, train_pairs, &spec, run.cache.as_deref(), "train", run.progress)?;
    let val = features::collect(model, val_pairs, &spec, run.cache.as_deref(), "val", run.progress)?;
    Ok(Features { train, val, secs: t0.elapsed().as_secs_f64() })
}

/// Phase 2: the prior's T_stats, from whole functions (up to `max_len` tokens).
fn prior_stats(model: &Model, train_pairs: &[Pair], cfg: &TrainConfig) -> Result<Vec<f32>> {
    let mut tok_pairs = Vec::with_capacity(train_pairs.len());
    for p in train_pairs {
        let enc = |s: &str| -> Result<Vec<u32>> { Ok(model.tokenizer.encode(s)?.into_iter().take(cfg.max_len).collect()) };
        tok_pairs.push((enc(&p.fixed)?, enc(&p.vulnerable)?));
    }
    t_stats(&tok_pairs, model.cfg().vocab_size, cfg.prior)
}

/// Phase 3a: fresh adapters on the model, by PEFT name (none for an analyzer-only run).
fn attach_adapters(model: &mut Model, cfg: &TrainConfig) -> Result<Params> {
    let mut p = Params::default();
    if let Some(l) = &cfg.lora {
        for (k, v) in model.decoder.attach_lora(l)? {
            p.insert(k, v);
        }
    }
    Ok(p)
}

/// Phase 3b: what learns. The trainer (model, aggregator, analyzer), the parameters in their
/// two groups (adapters; aggregator and analyzer) and the optimizer over both.
struct Learner<'a> {
    tr: Trainer<'a>,
    adapters: Params,
    heads: Params,
    all: Params,
    opt: AdamW,
}

impl<'a> Learner<'a> {
    fn new(model: &'a Model, cfg: &TrainConfig, from: usize, layers: &[LayerRef], adapters: Params) -> Result<Self> {
        let dev = model.decoder.device().clone();
        let aggregator = Aggregator::new(cfg.aggregator, layers.to_vec(), model.cfg().hidden_size, SplitMix::derive(cfg.seed, 100), &dev)?;
        let analyzer = Analyzer::new(model.cfg().hidden_size, model.cfg().vocab_size, SplitMix::derive(cfg.seed, 200), &dev)?;
        let mut heads = aggregator.params();
        heads.extend("", &analyzer.params());
        let mut all = adapters.clone();
        all.extend("", &heads);
        let opt = AdamW::new(cfg.adamw, vec![Group { params: adapters.clone(), lr: cfg.lr }, Group { params: heads.clone(), lr: cfg.head_lr }]);
        let head_w = model.decoder.lm_head.dense_weight()?;
        let tr = Trainer { model, cfg: cfg.clone(), aggregator, analyzer, from, head_w, adapters: adapters.clone() };
        Ok(Self { tr, adapters, heads, all, opt })
    }
}

/// What the guard files say about the model and the run that made them.
fn guard_meta(model: &Model, cfg: &TrainConfig, layers: &[LayerRef], data_hash: &str, pairs: &[Pair]) -> Result<GuardMeta> {
    let mut cwes: Vec<String> = pairs.iter().map(|p| p.cwe.to_string()).collect();
    cwes.sort();
    cwes.dedup();
    Ok(GuardMeta {
        model_fingerprint: model.info.fingerprint.clone(),
        model_arch: format!("{:?}", model.cfg().arch).to_lowercase(),
        n_layers: model.cfg().n_layers,
        hidden: model.cfg().hidden_size,
        vocab: model.cfg().vocab_size,
        aggregator: cfg.aggregator,
        layers: layers.to_vec(),
        lora: cfg.lora.clone(),
        prior_rule: serde_json::to_string(&cfg.prior)?,
        data_hash: data_hash.to_string(),
        settings: serde_json::to_value(cfg)?,
        cwes,
    })
}

/// A run in progress: the learner, its data, the metrics log and the step schedule.
struct Session<'a> {
    learner: Learner<'a>,
    cfg: &'a TrainConfig,
    run: &'a RunOptions,
    feats: Features,
    meta: GuardMeta,
    t_stats: Vec<f32>,
    metrics: Metrics,
    steps_per_epoch: usize,
    total_steps: usize,
    warmup: usize,
}

impl<'a> Session<'a> {
    /// Phase 4: the session and the run state, fresh or restored from the checkpoint (the
    /// parameters, the optimizer's moments and the metrics log brought back to it).
    #[allow(clippy::too_many_arguments)]
    fn start(mut learner: Learner<'a>, resumed: Option<Resumed>, cfg: &'a TrainConfig, run: &'a RunOptions, feats: Features, meta: GuardMeta, t_stats: Vec<f32>, data_hash: &str) -> Result<(Self, RunState)> {
        let metrics_path = run.out.join("metrics.jsonl");
        let (st, metrics) = match resumed {
            Some((st, t)) => {
                let p: HashMap<String, Tensor> = t.iter().filter_map(|(k, v)| k.strip_prefix("p.").map(|n| (n.to_string(), v.clone()))).collect();
                learner.all.load(&p, "checkpoint")?;
                learner.opt.load_state(&t, st.step);
                let m = Metrics::open(&metrics_path, Some(st.metrics_lines))?;
                eprintln!("resuming at step {} (epoch {}, step {} of the epoch)", st.step, st.epoch + 1, st.epoch_step);
                (st, m)
            }
            None => (RunState::fresh(cfg, data_hash), Metrics::open(&metrics_path, None)?),
        };
        let steps_per_epoch = feats.train.len().div_ceil(cfg.pairs_per_step());
        let total_steps = steps_per_epoch * cfg.epochs;
        let warmup = ((cfg.warmup * total_steps as f64).ceil() as usize).max(1);
        Ok((Self { learner, cfg, run, feats, meta, t_stats, metrics, steps_per_epoch, total_steps, warmup }, st))
    }

    fn metrics_path(&self) -> std::path::PathBuf {
        self.run.out.join("metrics.jsonl")
    }

    /// Validation before the first step of a fresh run (when asked for and there is data).
    fn validate_at_start(&mut self, st: &mut RunState) -> Result<Option<ValStats>> {
        if !(st.step == 0 && st.epoch_step == 0 && self.run.val_at_start && !self.feats.val.is_empty()) {
            return Ok(None);
        }
        let v = validate(&self.learner.tr, &self.feats.val, self.run.progress)?;
        eprintln!("{}", val_line("before training", &v));
        self.metrics.log(serde_json::json!({"val": true, "epoch": 0, "step": 0, "stats": v}))?;
        st.history.push(serde_json::json!({"epoch": 0, "val": v}));
        st.metrics_lines = self.metrics.lines;
        Ok(Some(v))
    }

    /// Phase 5, one epoch from where `st` stands: its remaining optimizer steps, then the
    /// epoch's end. None: stopped by `max_steps` before the end.
    fn epoch(&mut self, st: &mut RunState, steps_here: &mut usize) -> Result<Option<ValStats>> {
        let (cfg, run) = (self.cfg, self.run);
        let mut order: Vec<usize> = (0..self.feats.train.len()).collect();
        SplitMix(SplitMix::derive(cfg.seed, 1000 + st.epoch as u64)).shuffle(&mut order);
        let pb = run.progress.then(|| bar(self.feats.train.len() as u64, &format!("epoch {}/{}", st.epoch + 1, cfg.epochs)));
        if let Some(b) = &pb {
            b.set_position((st.epoch_step * cfg.pairs_per_step()).min(self.feats.train.len()) as u64);
        }
        let t_epoch = Instant::now();
        while st.epoch_step < self.steps_per_epoch {
            if run.max_steps.is_some_and(|m| *steps_here >= m) {
                if let Some(b) = pb {
                    b.finish();
                }
                return Ok(None);
            }
            self.step(st, &order, pb.as_ref())?;
            *steps_here += 1;
        }
        if let Some(b) = pb {
            b.finish();
        }
        self.end_epoch(st, t_epoch).map(Some)
    }

    /// One optimizer step over the epoch's next pairs in `order`: gradients accumulated pair by
    /// pair, AdamW with the scheduled learning rate, a metrics line, and a checkpoint every
    /// `checkpoint_every` steps.
    fn step(&mut self, st: &mut RunState, order: &[usize], pb: Option<&Progress>) -> Result<()> {
        let cfg = self.cfg;
        let t_step = Instant::now();
        let pps = cfg.pairs_per_step();
        let idx = &order[st.epoch_step * pps..((st.epoch_step + 1) * pps).min(order.len())];
        let scale = 1.0 / idx.len() as f64;
        let mut sum = PairOut::default();
        for (j, &i) in idx.iter().enumerate() {
            let ex = &self.feats.train[i];
            let seed = SplitMix::derive(cfg.seed, (st.step as u64) << 20 | j as u64);
            let (o, g) = self.learner.tr.pair(ex, Some(seed), Some(scale)).with_context(|| format!("training pair {}", ex.source))?;
            {
                let _p = step_profile::span(6);
                self.learner.opt.accumulate(&g.expect("gradients"))?;
            }
            sum.gen += o.gen * scale;
            sum.kl += o.kl * scale;
            sum.sec += o.sec * scale;
            if let Some(b) = pb {
                b.inc(1);
            }
        }
        let factor = lr_factor(st.step, self.warmup, self.total_steps);
        let gnorm = {
            let _p = step_profile::span(6);
            self.learner.opt.step(factor, cfg.clip)?
        };
        st.step += 1;
        st.epoch_step += 1;
        let secs = t_step.elapsed().as_secs_f64();
        st.train_secs += secs;
        self.metrics.log(serde_json::json!({
            "step": st.step, "epoch": st.epoch + 1, "lr": cfg.lr * factor, "head_lr": cfg.head_lr * factor,
            "loss": sum.total(cfg), "gen": sum.gen, "sec": sum.sec, "kl": sum.kl, "grad_norm": gnorm, "secs": secs,
        }))?;
        st.metrics_lines = self.metrics.lines;
        if let Some(b) = pb {
            b.set_message(format!("step {}/{}  loss {:.3}  gen {:.3}  sec {:.3}  kl {:.4}", st.step, self.total_steps, sum.total(cfg), sum.gen, sum.sec, sum.kl));
        }
        if self.run.checkpoint_every > 0 && st.step % self.run.checkpoint_every == 0 && st.epoch_step < self.steps_per_epoch {
            save_checkpoint(&self.run.out, st, &self.learner.all, &self.learner.opt)?;
        }
        Ok(())
    }

    /// The epoch's end: validation, the guard saved when it is the best so far, early stopping,
    /// and a checkpoint.
    fn end_epoch(&mut self, st: &mut RunState, t_epoch: Instant) -> Result<ValStats> {
        let v = validate(&self.learner.tr, &self.feats.val, self.run.progress)?;
        eprintln!("{}  ({:.0}s)", val_line(&format!("epoch {}", st.epoch + 1), &v), t_epoch.elapsed().as_secs_f64());
        self.metrics.log(serde_json::json!({"val": true, "epoch": st.epoch + 1, "step": st.step, "stats": v}))?;
        st.history.push(serde_json::json!({"epoch": st.epoch + 1, "val": v, "epoch_secs": t_epoch.elapsed().as_secs_f64()}));
        if self.feats.val.is_empty() || st.best_val.is_none_or(|b| v.loss < b) {
            st.best_val = Some(v.loss);
            st.best_epoch = Some(st.epoch + 1);
            st.bad_epochs = 0;
            self.save_guard()?;
        } else {
            st.bad_epochs += 1;
            if st.bad_epochs >= self.cfg.patience {
                eprintln!("early stop: no better validation loss for {} epochs", self.cfg.patience);
                st.stopped = true;
            }
        }
        st.epoch += 1;
        st.epoch_step = 0;
        st.metrics_lines = self.metrics.lines;
        save_checkpoint(&self.run.out, st, &self.learner.all, &self.learner.opt)?;
        Ok(v)
    }

    /// The guard files (settings, aggregator, analyzer, T_stats, adapters) into the run folder.
    fn save_guard(&self) -> Result<()> {
        let tr = &self.learner.tr;
        let g = Guard { meta: self.meta.clone(), aggregator: tr.aggregator.clone(), analyzer: tr.analyzer.clone(), t_stats: self.t_stats.clone(), adapters: Default::default() };
        g.save(&self.run.out, tr.model, &tr.adapters)
    }

    fn report(&self, state: RunState, last_val: Option<ValStats>, first_val: Option<ValStats>) -> TrainReport {
        TrainReport {
            state,
            train_pairs: self.feats.train.len(),
            val_pairs: self.feats.val.len(),
            features_secs: self.feats.secs,
            steps_per_epoch: self.steps_per_epoch,
            params_adapters: self.learner.adapters.count(),
            params_heads: self.learner.heads.count(),
            last_val,
            first_val,
        }
    }
}
