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

use crate::aggregator::{top_layers, Aggregator, LayerRef, Mode};
use crate::analyzer::{sequence_score, Analyzer};
use crate::data::{pairs_hash, Align, Pair, WindowSpec};
use crate::features::{self, Example, FeatureSpec, Side};
use crate::guard::{Guard, GuardMeta};
use crate::losses::{head_losses, margin_loss};
use crate::optim::{lr_factor, AdamW, AdamWConfig, Group};
use crate::params::Params;
use crate::prior::{t_stats, PriorRule};
use deepguard_runtime::files::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use deepguard_runtime::lora::LoraConfig;
use deepguard_runtime::rng::SplitMix;
use deepguard_runtime::{ForwardOpts, ForwardOutput, LayerSelect, LogitsSelect, Model};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PairOut {
    pub gen: f64,
    pub kl: f64,
    pub sec: f64,
    pub s_sec: f32,
    pub s_vul: f32,
}

impl PairOut {
    pub fn total(&self, c: &TrainConfig) -> f64 {
        c.w_gen * self.gen + c.w_sec * self.sec + c.w_kl * self.kl
    }
}

/// The model, the trainable heads and the frozen head weight, ready for [`Trainer::pair`].
pub struct Trainer<'a> {
    pub model: &'a Model,
    pub cfg: TrainConfig,
    pub aggregator: Aggregator,
    pub analyzer: Analyzer,
    /// First adapted block.
    pub from: usize,
    /// Output head weight (vocab, hidden), dense.
    pub head_w: Tensor,
    /// Adapters by PEFT name.
    pub adapters: Params,
}

/// Wall-clock time per part of a training step, printed after training when
/// `DEEPGUARD_PROFILE=1` (the same switch as the decoder's profile).
mod step_profile {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    pub const NAMES: [&str; 7] = ["adapted blocks (fwd)", "aggregator+analyzer (fwd)", "head logits (cur+ref)", "head losses", "head gradient matmul", "backward", "grad accumulate+optimizer"];
    static NS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

    pub struct Span(Option<(usize, Instant)>);
    pub fn span(i: usize) -> Span {
        Span(deepguard_runtime::profile::enabled().then(|| (i, Instant::now())))
    }
    impl Drop for Span {
        fn drop(&mut self) {
            if let Some((i, t)) = self.0 {
                NS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        }
    }
    pub fn report(pairs: usize) {
        if !deepguard_runtime::profile::enabled() || pairs == 0 {
            return;
        }
        let total: u64 = NS.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        eprintln!("training step profile over {pairs} pairs ({:.3} s per pair in the parts below):", total as f64 / 1e9 / pairs as f64);
        for (n, a) in NAMES.iter().zip(&NS) {
            let ns = a.load(Ordering::Relaxed) as f64;
            eprintln!("  {n:<28} {:>8.3} s/pair  {:>5.1}%", ns / 1e9 / pairs as f64, 100.0 * ns / total.max(1) as f64);
        }
    }
}

impl<'a> Trainer<'a> {
    /// The aggregator's input layers for one side: cached below the adapters, recomputed (with
    /// adapters and gradients) from the first adapted block up. Also returns the final-norm output
    /// when it was recomputed.
    fn side_states(&self, side: &Side, dropout_seed: Option<u64>) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let cached = |r: &LayerRef| side.layers.get(r).cloned().ok_or_else(|| anyhow!("feature cache lacks layer {r:?}"));
        if self.cfg.lora.is_none() {
            return Ok((self.aggregator.layers.iter().map(cached).collect::<Result<_>>()?, None));
        }
        let dec = &self.model.decoder;
        let input = if self.from == 0 {
            dec.embed(&Tensor::new(side.ids.as_slice(), dec.device())?.unsqueeze(0)?)?
        } else {
            cached(&LayerRef::Block(self.from - 1))?
        };
        let keep: Vec<usize> = self.aggregator.layers.iter().filter_map(|r| if let LayerRef::Block(b) = r { (*b >= self.from).then_some(*b) } else { None }).collect();
        let opts = ForwardOpts { keep: LayerSelect::Only(keep), keep_final_norm: true, logits: LogitsSelect::None, grad: true, lora: true, dropout_seed, hooks: &[] };
        let mut out = ForwardOutput::default();
        let h = dec.run_blocks(input, self.from..dec.cfg.n_layers, 0, None, &opts, &mut out)?;
        dec.head(&h, &opts, &mut out)?;
        let fin = out.final_norm.take().ok_or_else(|| anyhow!("final norm missing"))?;
        let mut hs = Vec::with_capacity(self.aggregator.layers.len());
        for r in &self.aggregator.layers {
            hs.push(match r {
                LayerRef::Block(b) if *b < self.from => cached(r)?,
                LayerRef::Block(b) => out.hidden.remove(b).ok_or_else(|| anyhow!("block {b} output missing"))?,
                LayerRef::FinalNorm => fin.clone(),
            });
        }
        Ok((hs, Some(fin)))
    }

    /// The sequence score of one side from its aggregator inputs.
    fn side_score(&self, hs: &[Tensor], ids: &[u32], dropout_seed: Option<u64>) -> Result<Tensor> {
        let ids = Tensor::new(ids, self.model.decoder.device())?.unsqueeze(0)?;
        let agg = self.aggregator.forward(hs)?;
        let s = self.analyzer.token_scores(&agg, &ids, dropout_seed)?;
        sequence_score(&s, &s.ones_like()?)
    }

    /// Losses of one pair; with `backward = Some(scale)`, also the gradients of `scale * L`.
    /// `dropout_seed` is Some in training (dropout active, masks drawn from it).
    pub fn pair(&self, ex: &Example, dropout_seed: Option<u64>, backward: Option<f64>) -> Result<(PairOut, Option<GradStore>)> {
        let seed = |k: u64| dropout_seed.map(|s| SplitMix::derive(s, k));
        let c = &self.cfg;
        // Secure side: gradients flow into the adapters and the heads.
        let p = step_profile::span(0);
        let (hs_sec, fin) = self.side_states(&ex.secure, seed(1))?;
        drop(p);
        let p = step_profile::span(1);
        let s_sec = self.side_score(&hs_sec, &ex.secure.ids, seed(2))?;
        drop(p);
        // Vulnerable side: the adapters get no gradient from it, the heads do.
        let p = step_profile::span(0);
        let (hs_vul, _) = self.side_states(&ex.vulnerable, seed(3))?;
        let hs_vul: Vec<Tensor> = hs_vul.iter().map(|t| t.detach()).collect();
        drop(p);
        let p = step_profile::span(1);
        let s_vul = self.side_score(&hs_vul, &ex.vulnerable.ids, seed(4))?;
        drop(p);
        let l_sec = margin_loss(&s_sec, &s_vul, c.margin)?;
        let mut out = PairOut {
            sec: l_sec.to_scalar::<f32>()? as f64,
            s_sec: s_sec.to_vec1::<f32>()?[0],
            s_vul: s_vul.to_vec1::<f32>()?[0],
            ..Default::default()
        };
        let mut objective = (l_sec * c.w_sec)?;
        if let Some(fin) = fin {
            // L_gen and L_kl from the head, with their closed-form gradient (see `losses`).
            let z = fin.squeeze(0)?;
            let p = step_profile::span(2);
            let logits = z.detach().matmul(&self.head_w.t()?)?;
            let reference = ex.secure.layers.get(&LayerRef::FinalNorm).ok_or_else(|| anyhow!("feature cache lacks the reference final norm"))?;
            let ref_logits = reference.squeeze(0)?.matmul(&self.head_w.t()?)?;
            drop(p);
            let p = step_profile::span(3);
            let (hl, g_logits) = head_losses(&logits, &ref_logits, &ex.secure.ids, c.w_gen, c.w_kl, c.kl_clamp)?;
            drop(p);
            out.gen = hl.gen;
            out.kl = hl.kl;
            if backward.is_some() {
                let _p = step_profile::span(4);
                let g_z = g_logits.matmul(&self.head_w)?;
                objective = (objective + (z * g_z)?.sum_all()?)?;
            }
        }
        let grads = match backward {
            Some(scale) => {
                let _p = step_profile::span(5);
                Some((objective * scale)?.backward()?)
            }
            None => None,
        };
        Ok((out, grads))
    }
}

/// Validation results: mean losses and how well the analyzer orders the pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValStats {
    pub pairs: usize,
    pub loss: f64,
    pub gen: f64,
    pub sec: f64,
    pub kl: f64,
    /// Fraction of pairs with S(fixed) > S(vulnerable).
    pub accuracy: f64,
    /// Length-only baselines on the same pairs: "the longer side is the fixed one" (ties count
    /// half), on the windows the analyzer saw and on whole functions.
    pub length_window: f64,
    pub length_full: f64,
    pub per_cwe: Vec<(String, usize, f64)>,
}

pub fn validate(tr: &Trainer, val: &[Example], progress: bool) -> Result<ValStats> {
    let mut s = ValStats { pairs: val.len(), ..Default::default() };
    if val.is_empty() {
        return Ok(s);
    }
    let bar = progress.then(|| bar(val.len() as u64, "validation"));
    let mut by_cwe: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let longer = |a: usize, b: usize| if a > b { 1.0 } else if a == b { 0.5 } else { 0.0 };
    for ex in val {
        let (o, _) = tr.pair(ex, None, None).with_context(|| format!("validation pair {}", ex.source))?;
        s.loss += o.total(&tr.cfg);
        s.gen += o.gen;
        s.sec += o.sec;
        s.kl += o.kl;
        let right = o.s_sec > o.s_vul;
        s.accuracy += right as u8 as f64;
        let e = by_cwe.entry(ex.cwe.slug()).or_default();
        e.0 += 1;
        e.1 += right as usize;
        s.length_window += longer(ex.secure.ids.len(), ex.vulnerable.ids.len());
        s.length_full += longer(ex.secure.full_tokens, ex.vulnerable.full_tokens);
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    let n = val.len() as f64;
    for x in [&mut s.loss, &mut s.gen, &mut s.sec, &mut s.kl, &mut s.accuracy, &mut s.length_window, &mut s.length_full] {
        *x /= n;
    }
    s.per_cwe = by_cwe.into_iter().map(|(k, (n, r))| (k, n, r as f64 / n as f64)).collect();
    Ok(s)
}

fn bar(len: u64, label: &str) -> crate::progress::Progress {
    crate::progress::Progress::new(len, label, "pairs")
}

/// Where a run is: written with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub config: TrainConfig,
    pub data_hash: String,
    /// Optimizer steps taken.
    pub step: usize,
    pub epoch: usize,
    /// Steps completed within `epoch`.
    pub epoch_step: usize,
    pub best_val: Option<f64>,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    pub stopped: bool,
    /// Lines of metrics.jsonl that belong to this state.
    pub metrics_lines: usize,
    pub history: Vec<serde_json::Value>,
    /// Seconds spent training (excluding feature caching), summed over resumed runs.
    pub train_secs: f64,
}

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

const CHECKPOINT: &str = "checkpoint.json";

fn save_checkpoint(out: &Path, st: &RunState, params: &Params, opt: &AdamW) -> Result<()> {
    let dir = out.join("checkpoints").join(format!("step-{:06}", st.step));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut t: std::collections::HashMap<String, Tensor> = opt.state();
    for (k, v) in params.tensors() {
        t.insert(format!("p.{k}"), v);
    }
    deepguard_runtime::files::atomically(&dir.join("state.safetensors"), |tmp| Ok(candle_core::safetensors::save(&t, tmp)?))?;
    let mut j = serde_json::to_value(st)?;
    j["dir"] = serde_json::json!(dir.strip_prefix(out).unwrap_or(&dir));
    write_atomic(&out.join(CHECKPOINT), serde_json::to_string_pretty(&j)?.as_bytes())?;
    // Older checkpoints are no longer referenced.
    if let Ok(rd) = std::fs::read_dir(out.join("checkpoints")) {
        for e in rd.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

fn load_checkpoint(out: &Path) -> Result<Option<(RunState, std::collections::HashMap<String, Tensor>)>> {
    let p = out.join(CHECKPOINT);
    if !p.exists() {
        return Ok(None);
    }
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?).with_context(|| format!("{}: not valid JSON", p.display()))?;
    let dir = out.join(j["dir"].as_str().ok_or_else(|| anyhow!("{}: no `dir`", p.display()))?);
    let st: RunState = serde_json::from_value(j).with_context(|| format!("{}: unreadable run state", p.display()))?;
    let f = dir.join("state.safetensors");
    let t = candle_core::safetensors::load(&f, &candle_core::Device::Cpu).with_context(|| format!("cannot read checkpoint {}", f.display()))?;
    Ok(Some((st, t)))
}

/// Appends to metrics.jsonl (truncated to the checkpoint's lines on resume).
struct Metrics {
    file: std::fs::File,
    lines: usize,
}

impl Metrics {
    fn open(path: &Path, keep_lines: Option<usize>) -> Result<Self> {
        let lines = match keep_lines {
            Some(n) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let kept: Vec<&str> = text.lines().take(n).collect();
                let mut s = kept.join("\n");
                if !s.is_empty() {
                    s.push('\n');
                }
                write_atomic(path, s.as_bytes())?;
                kept.len()
            }
            None => {
                std::fs::write(path, b"").with_context(|| format!("cannot write {}", path.display()))?;
                0
            }
        };
        let file = std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file, lines })
    }

    fn log(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}")?;
        self.file.flush()?;
        self.lines += 1;
        Ok(())
    }
}

/// Full training run: features, T_stats, epochs with validation, checkpoints, artefacts.
pub fn train(model: &mut Model, train_pairs: &[Pair], val_pairs: &[Pair], cfg: &TrainConfig, run: &RunOptions) -> Result<TrainReport> {
    if train_pairs.is_empty() {
        bail!("no training pairs");
    }
    let n_layers = model.cfg().n_layers;
    // Blocks from `from` up run with dense weights in every step; below, features are cached.
    // Never above the default (top 2), so that the ablations (`--analyzer-only`, other
    // aggregator modes) reuse the same feature cache.
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
        let st = RunState { config: cfg.clone(), data_hash, step: 0, epoch: 0, epoch_step: 0, best_val: None, best_epoch: None, bad_epochs: 0, stopped: false, metrics_lines: 0, history: vec![], train_secs: 0.0 };
        return Ok(TrainReport { state: st, train_pairs: train_ex.len(), val_pairs: val_ex.len(), features_secs, steps_per_epoch: 0, params_adapters: 0, params_heads: 0, last_val: None, first_val: None });
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
        None => (
            RunState { config: cfg.clone(), data_hash: data_hash.clone(), step: 0, epoch: 0, epoch_step: 0, best_val: None, best_epoch: None, bad_epochs: 0, stopped: false, metrics_lines: 0, history: vec![], train_secs: 0.0 },
            Metrics::open(&metrics_path, None)?,
        ),
    };
    let spe = train_ex.len().div_ceil(cfg.pairs_per_step());
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
                return Ok(TrainReport { state: st, train_pairs: train_ex.len(), val_pairs: val_ex.len(), features_secs, steps_per_epoch: spe, params_adapters: adapters.count(), params_heads: heads.count(), last_val, first_val });
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
    let report = TrainReport { state: st, train_pairs: train_ex.len(), val_pairs: val_ex.len(), features_secs, steps_per_epoch: spe, params_adapters: adapters.count(), params_heads: heads.count(), last_val, first_val };
    write_atomic(&run.out.join("train_report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

pub fn val_line(label: &str, v: &ValStats) -> String {
    format!(
        "{label}: val loss {:.4} (gen {:.4}, sec {:.4}, kl {:.5}); analyzer S(fixed) > S(vulnerable) on {:.1}% of {} pairs (length baseline: windows {:.1}%, whole functions {:.1}%)",
        v.loss,
        v.gen,
        v.sec,
        v.kl,
        100.0 * v.accuracy,
        v.pairs,
        100.0 * v.length_window,
        100.0 * v.length_full
    )
}

/// loss.svg from metrics.jsonl: training loss components per step and validation loss.
pub fn write_loss_plot(metrics: &Path, out: &Path) -> Result<()> {
    use crate::plot::{line_chart, Series};
    let text = std::fs::read_to_string(metrics).with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut s: Vec<Vec<(f64, f64)>> = vec![vec![]; 5];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: bad line", metrics.display()))?;
        let step = v["step"].as_f64().unwrap_or(0.0);
        if v["val"].as_bool() == Some(true) {
            if let Some(l) = v["stats"]["loss"].as_f64() {
                s[4].push((step, l));
            }
        } else {
            for (k, name) in ["loss", "gen", "sec", "kl"].iter().enumerate() {
                if let Some(x) = v[*name].as_f64() {
                    s[k].push((step, x));
                }
            }
        }
    }
    let ymax = s.iter().flatten().map(|p| p.1).fold(0.1, f64::max) * 1.05;
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#000000"];
    let labels = ["train loss", "train L_gen", "train L_sec", "train L_kl", "validation loss"];
    let series: Vec<Series> = s
        .into_iter()
        .enumerate()
        .map(|(i, pts)| Series { label: labels[i].to_string(), points: pts, dashed: i == 4, color: colors[i] })
        .collect();
    let svg = line_chart("DeepGuard training", "optimizer step", "loss", (0.0, ymax), &series, &[]);
    write_atomic(out, svg.as_bytes())
}
