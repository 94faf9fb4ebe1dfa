//! Layer-wise probe diagnostics: per-layer representations of the secure and the vulnerable side
//! of each pair (cached on disk), logistic-regression probes per layer under k-fold
//! cross-validation (pooled and per CWE), the secure-minus-vulnerable mean-difference norm, and
//! the length-only baselines every probe is reported beside.

pub mod logreg;

use crate::data::{window_pair, Cwe, Pair, WindowSpec};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use deepguard_runtime::{ForwardOpts, LayerSelect, LogitsSelect, Model};
use logreg::{cross_val_scores, folds, pair_metrics, Matrix, Metrics};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How a side's token sequence becomes one vector per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The last token of the window.
    Last,
    /// The mean over all tokens of the window.
    Mean,
    /// The mean over the changed tokens only.
    Changed,
}

impl Pooling {
    pub const ALL: [Pooling; 3] = [Pooling::Last, Pooling::Mean, Pooling::Changed];
    pub fn name(&self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
            Pooling::Changed => "changed",
        }
    }
}

/// Per-layer pooled block outputs of both sides of every pair. Item 2i is pair i's vulnerable
/// side, item 2i+1 its fixed (secure) side.
pub struct Activations {
    pub n_layers: usize,
    pub hidden: usize,
    /// (pooling) -> (items, layers, hidden) row-major.
    pub pooled: HashMap<Pooling, Vec<f32>>,
    /// Tokens the model saw per item (after windowing).
    pub tokens: Vec<u32>,
    /// Tokens of the whole function per item.
    pub full_tokens: Vec<u32>,
    pub cwes: Vec<Cwe>,
}

impl Activations {
    pub fn n_pairs(&self) -> usize {
        self.cwes.len()
    }
    /// (items, hidden) features of one layer.
    pub fn layer(&self, pooling: Pooling, layer: usize) -> Matrix {
        let all = &self.pooled[&pooling];
        let (l, d) = (self.n_layers, self.hidden);
        let n = all.len() / (l * d);
        let mut data = Vec::with_capacity(n * d);
        for i in 0..n {
            data.extend_from_slice(&all[(i * l + layer) * d..(i * l + layer + 1) * d]);
        }
        Matrix::new(n, d, data)
    }
}

/// Pools one forward pass's block outputs: `hidden[l]` is (1, t, d).
fn pool_item(hidden: &std::collections::BTreeMap<usize, Tensor>, changed: &Range<usize>, out: &mut HashMap<Pooling, Vec<f32>>) -> Result<()> {
    for h in hidden.values() {
        let t = h.dim(1)?;
        let c = if changed.is_empty() || changed.end > t { t - 1..t } else { changed.clone() };
        let rows = [
            (Pooling::Last, h.narrow(1, t - 1, 1)?.flatten_all()?),
            (Pooling::Mean, h.mean(1)?.flatten_all()?),
            (Pooling::Changed, h.narrow(1, c.start, c.len())?.mean(1)?.flatten_all()?),
        ];
        for (p, v) in rows {
            out.entry(p).or_default().extend(v.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
    }
    Ok(())
}

/// Pairs per cache shard: a run interrupted mid-way resumes from the last complete shard.
const SHARD: usize = 16;

/// The cache folder for this model + data + window: a hash of all three.
pub fn cache_key(model: &Model, pairs: &[Pair], spec: &WindowSpec) -> String {
    let salt = format!("deepguard-activations-v1;{};{}", model.info.fingerprint, serde_json::to_string(spec).unwrap_or_default());
    crate::data::pairs_hash(pairs, &salt)
}


fn save_shard(path: &Path, shard: &HashMap<Pooling, Vec<f32>>, items: usize, l: usize, d: usize, tokens: &[u32], full: &[u32]) -> Result<()> {
    let dev = Device::Cpu;
    let mut ts: Vec<(String, Tensor)> = Vec::new();
    for (p, v) in shard {
        ts.push((p.name().to_string(), Tensor::from_slice(v, (items, l, d), &dev)?));
    }
    ts.push(("tokens".into(), Tensor::from_slice(tokens, items, &dev)?));
    ts.push(("full_tokens".into(), Tensor::from_slice(full, items, &dev)?));
    let ts: HashMap<String, Tensor> = ts.into_iter().collect();
    deepguard_runtime::files::atomically(path, |tmp| Ok(candle_core::safetensors::save(&ts, tmp)?))
}

fn load_shard(path: &Path, items: usize, l: usize, d: usize) -> Result<(HashMap<Pooling, Vec<f32>>, Vec<u32>, Vec<u32>)> {
    let ts = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| anyhow!("{}: corrupt activation cache: {e}", path.display()))?;
    let mut pooled = HashMap::new();
    for p in Pooling::ALL {
        let t = ts.get(p.name()).ok_or_else(|| anyhow!("{}: `{}` missing from the activation cache", path.display(), p.name()))?;
        if t.dims() != [items, l, d] {
            bail!("{}: cached `{}` has shape {:?}, expected {:?}", path.display(), p.name(), t.dims(), [items, l, d]);
        }
        pooled.insert(p, t.flatten_all()?.to_vec1::<f32>()?);
    }
    let u = |k: &str| -> Result<Vec<u32>> { Ok(ts.get(k).ok_or_else(|| anyhow!("{}: `{k}` missing", path.display()))?.to_vec1::<u32>()?) };
    Ok((pooled, u("tokens")?, u("full_tokens")?))
}

/// Runs the model over both sides of every pair (or reads the cache) and pools every block's
/// output. With `cache` set, results are stored under `cache/<key>/` in shards of 16 pairs,
/// each written atomically; a second run with the same model, data and window reads them back.
pub fn collect(model: &Model, pairs: &[Pair], spec: &WindowSpec, cache: Option<&Path>, progress: bool) -> Result<Activations> {
    let (l, d) = (model.cfg().n_layers, model.cfg().hidden_size);
    let dir: Option<PathBuf> = cache.map(|c| c.join(cache_key(model, pairs, spec)));
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create cache folder {}", dir.display()))?;
    }
    let n_shards = pairs.len().div_ceil(SHARD);
    let shard_path = |s: usize| dir.as_ref().map(|d| d.join(format!("shard-{s:05}.safetensors")));
    // tokenise everything first: the progress bar counts tokens
    let mut windows = Vec::with_capacity(pairs.len());
    for p in pairs {
        windows.push(window_pair(&model.tokenizer, p, spec)?);
    }
    let todo_tokens: u64 = (0..n_shards)
        .filter(|&s| !shard_path(s).is_some_and(|p| p.exists()))
        .flat_map(|s| s * SHARD..((s + 1) * SHARD).min(pairs.len()))
        .map(|i| (windows[i].0.ids.len() + windows[i].1.ids.len()) as u64)
        .sum();
    let bar = (progress && todo_tokens > 0).then(|| crate::progress::Progress::new(todo_tokens, "activations", "tokens"));
    let mut acts = Activations { n_layers: l, hidden: d, pooled: HashMap::new(), tokens: vec![], full_tokens: vec![], cwes: pairs.iter().map(|p| p.cwe).collect() };
    let opts = ForwardOpts { keep: LayerSelect::All, logits: LogitsSelect::None, lora: true, ..Default::default() };
    for s in 0..n_shards {
        let range = s * SHARD..((s + 1) * SHARD).min(pairs.len());
        let items = range.len() * 2;
        let cached = shard_path(s).filter(|p| p.exists());
        let (pooled, tokens, full) = match cached {
            Some(p) => load_shard(&p, items, l, d)?,
            None => {
                let mut pooled = HashMap::new();
                let (mut tokens, mut full) = (vec![], vec![]);
                for i in range.clone() {
                    for w in [&windows[i].0, &windows[i].1] {
                        let ids = Tensor::new(w.ids.as_slice(), model.decoder.device())?.unsqueeze(0)?;
                        let out = model.decoder.forward(&ids, 0, None, &opts).with_context(|| format!("{}: forward pass", pairs[i].source))?;
                        pool_item(&out.hidden, &w.changed, &mut pooled)?;
                        tokens.push(w.ids.len() as u32);
                        full.push(w.full_tokens as u32);
                        if let Some(b) = &bar {
                            b.inc(w.ids.len() as u64);
                        }
                    }
                    if let Some(b) = &bar {
                        b.set_message(format!("pair {}/{}", i + 1, pairs.len()));
                    }
                }
                if let Some(p) = shard_path(s) {
                    save_shard(&p, &pooled, items, l, d, &tokens, &full)?;
                }
                (pooled, tokens, full)
            }
        };
        for (p, v) in pooled {
            acts.pooled.entry(p).or_default().extend(v);
        }
        acts.tokens.extend(tokens);
        acts.full_tokens.extend(full);
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(acts)
}

/// Probe settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSettings {
    pub folds: usize,
    pub seed: u64,
    pub l2: f64,
    /// Per-CWE probes need at least this many pairs.
    pub min_pairs_per_cwe: usize,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self { folds: 5, seed: 42, l2: 0.1, min_pairs_per_cwe: 8 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerScore {
    pub layer: usize,
    pub accuracy: f64,
    pub auc: f64,
    pub pair_accuracy: f64,
    /// |mean(secure) - mean(vulnerable)|.
    pub diff_norm: f64,
    /// `diff_norm` over the mean norm of the representations at this layer.
    pub rel_norm: f64,
}

/// Length-only baselines on the same pairs and folds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LengthBaseline {
    /// "The longer side is the fixed one", on the token counts the model saw (ties count half).
    pub longer_is_fixed: f64,
    /// The same on whole functions (before windowing).
    pub longer_is_fixed_full: f64,
    /// Fraction of pairs whose two windows have the same length.
    pub equal_length_pairs: f64,
    /// Logistic regression on the token count alone, same cross-validation.
    pub count_probe: Metrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReport {
    /// `all` or a CWE (`CWE-89`).
    pub group: String,
    pub n_pairs: usize,
    pub folds: usize,
    pub layers: Vec<LayerScore>,
    pub length: LengthBaseline,
}

impl GroupReport {
    /// The layer with the highest accuracy (the earliest on ties).
    pub fn peak(&self) -> &LayerScore {
        self.layers.iter().fold(&self.layers[0], |b, s| if s.accuracy > b.accuracy + 1e-12 { s } else { b })
    }
    pub fn last(&self) -> &LayerScore {
        self.layers.last().unwrap()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolingReport {
    pub pooling: Pooling,
    pub groups: Vec<GroupReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub model: String,
    pub fingerprint: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub data: Vec<String>,
    pub n_pairs: usize,
    pub skipped_lines: usize,
    pub window: WindowSpec,
    pub settings: ProbeSettings,
    pub poolings: Vec<PoolingReport>,
}

impl ProbeReport {
    pub fn pooled(&self, pooling: Pooling) -> Option<&GroupReport> {
        self.poolings.iter().find(|p| p.pooling == pooling).and_then(|p| p.groups.first())
    }
}

impl Metrics {
    fn of(scores: &[f32]) -> Metrics {
        pair_metrics(scores)
    }
}

/// Norm of mean(secure) - mean(vulnerable) and the mean representation norm.
pub fn diff_norms(x: &Matrix) -> (f64, f64) {
    let d = x.cols;
    let mut diff = vec![0f64; d];
    let mut norm_sum = 0.0;
    let pairs = x.rows / 2;
    for i in 0..x.rows {
        let sign = if i % 2 == 1 { 1.0 } else { -1.0 };
        let r = x.row(i);
        norm_sum += r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        for (a, &v) in diff.iter_mut().zip(r) {
            *a += sign * v as f64;
        }
    }
    let dn = diff.iter().map(|v| (v / pairs.max(1) as f64).powi(2)).sum::<f64>().sqrt();
    (dn, dn / (norm_sum / x.rows.max(1) as f64).max(1e-12))
}

/// Probes every layer for the pairs `idx` (indices into the activations' pairs).
pub fn probe_group(acts: &Activations, pooling: Pooling, idx: &[usize], name: &str, s: &ProbeSettings) -> GroupReport {
    let k = s.folds.min(idx.len()).max(2);
    let items: Vec<usize> = idx.iter().flat_map(|&p| [2 * p, 2 * p + 1]).collect();
    let y: Vec<bool> = (0..items.len()).map(|i| i % 2 == 1).collect();
    let group: Vec<usize> = (0..items.len()).map(|i| i / 2).collect();
    let fold_of = folds(idx.len(), k, s.seed);
    let mut layers = Vec::with_capacity(acts.n_layers);
    for l in 0..acts.n_layers {
        let x = acts.layer(pooling, l).select(&items);
        let scores = cross_val_scores(&x, &y, &group, &fold_of, k, s.l2);
        let m = Metrics::of(&scores);
        let (diff_norm, rel_norm) = diff_norms(&x);
        layers.push(LayerScore { layer: l, accuracy: m.accuracy, auc: m.auc, pair_accuracy: m.pair_accuracy, diff_norm, rel_norm });
    }
    let length = length_baseline(&acts.tokens, &acts.full_tokens, idx, s);
    GroupReport { group: name.to_string(), n_pairs: idx.len(), folds: k, layers, length }
}

/// Length-only baselines for the pairs `idx`, from per-item token counts (windowed and whole),
/// under the same folds as [`probe_group`].
pub fn length_baseline(tokens: &[u32], full_tokens: &[u32], idx: &[usize], s: &ProbeSettings) -> LengthBaseline {
    let k = s.folds.min(idx.len()).max(2);
    let items: Vec<usize> = idx.iter().flat_map(|&p| [2 * p, 2 * p + 1]).collect();
    let y: Vec<bool> = (0..items.len()).map(|i| i % 2 == 1).collect();
    let group: Vec<usize> = (0..items.len()).map(|i| i / 2).collect();
    let fold_of = folds(idx.len(), k, s.seed);
    let tok: Vec<f32> = items.iter().map(|&i| tokens[i] as f32).collect();
    let full: Vec<f32> = items.iter().map(|&i| full_tokens[i] as f32).collect();
    let count_scores = cross_val_scores(&Matrix::new(items.len(), 1, tok.clone()), &y, &group, &fold_of, k, s.l2);
    let equal = (0..idx.len()).filter(|&p| tok[2 * p] == tok[2 * p + 1]).count() as f64 / idx.len().max(1) as f64;
    LengthBaseline {
        longer_is_fixed: Metrics::of(&tok).pair_accuracy,
        longer_is_fixed_full: Metrics::of(&full).pair_accuracy,
        equal_length_pairs: equal,
        count_probe: Metrics::of(&count_scores),
    }
}

/// Token counts (windowed, whole) per item without running the model: item 2i / 2i+1 are pair
/// i's vulnerable / fixed side.
pub fn token_counts(model: &Model, pairs: &[Pair], spec: &WindowSpec) -> Result<(Vec<u32>, Vec<u32>)> {
    let (mut tokens, mut full) = (Vec::new(), Vec::new());
    for p in pairs {
        let (v, f) = window_pair(&model.tokenizer, p, spec)?;
        for w in [v, f] {
            tokens.push(w.ids.len() as u32);
            full.push(w.full_tokens as u32);
        }
    }
    Ok((tokens, full))
}

/// Probes pooled over all pairs, then per CWE (CWEs with fewer than `min_pairs_per_cwe` pairs
/// are left out).
pub fn probe_all(acts: &Activations, pooling: Pooling, s: &ProbeSettings, mut on_group: impl FnMut(&str)) -> PoolingReport {
    let all: Vec<usize> = (0..acts.n_pairs()).collect();
    on_group("all");
    let mut groups = vec![probe_group(acts, pooling, &all, "all", s)];
    let mut cwes: Vec<Cwe> = acts.cwes.clone();
    cwes.sort();
    cwes.dedup();
    for c in cwes {
        let idx: Vec<usize> = all.iter().copied().filter(|&i| acts.cwes[i] == c).collect();
        if idx.len() >= s.min_pairs_per_cwe {
            on_group(&c.to_string());
            groups.push(probe_group(acts, pooling, &idx, &c.to_string(), s));
        }
    }
    PoolingReport { pooling, groups }
}

/// The markdown report: per pooling, the pooled per-layer table, the length baselines, the
/// per-CWE peaks, and whether the peak sits below the last layer.
pub fn markdown(r: &ProbeReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# Layer-wise probes: {}\n", r.model);
    let _ = writeln!(
        s,
        "{} pairs from {} ({} malformed lines skipped); window {} tokens, aligned {:?}{}; logistic regression, L2 {}, {}-fold CV by pair, seed {}.\n",
        r.n_pairs,
        r.data.join(", "),
        r.skipped_lines,
        if r.window.budget == 0 { "unlimited".to_string() } else { r.window.budget.to_string() },
        r.window.align,
        if r.window.equal_length { ", both sides cut to equal length" } else { "" },
        r.settings.l2,
        r.settings.folds,
        r.settings.seed
    );
    let _ = writeln!(s, "Accuracy / AUC: each side classified alone (threshold 0.5). Pair acc.: the secure side scores higher than its vulnerable twin. Norm: |mean(secure) - mean(vulnerable)|; rel.: over the mean representation norm.\n");
    for p in &r.poolings {
        let g = &p.groups[0];
        let _ = writeln!(s, "## Pooling `{}`\n", p.pooling.name());
        let _ = writeln!(s, "| layer | accuracy | AUC | pair acc. | norm | rel. norm |\n|---|---|---|---|---|---|");
        let peak = g.peak().layer;
        for l in &g.layers {
            let mark = if l.layer == peak { " **peak**" } else { "" };
            let _ = writeln!(s, "| {}{} | {:.3} | {:.3} | {:.3} | {:.2} | {:.3} |", l.layer, mark, l.accuracy, l.auc, l.pair_accuracy, l.diff_norm, l.rel_norm);
        }
        let _ = writeln!(s, "\n{}\n", bottleneck_line(g));
        let b = &g.length;
        let _ = writeln!(
            s,
            "Length baselines (same pairs, same folds): longer side is the fixed one {:.3} on the windows the model saw ({:.3} on whole functions; {:.0}% of pairs have equal-length windows); logistic regression on token count: accuracy {:.3}, AUC {:.3}, pair acc. {:.3}.\n",
            b.longer_is_fixed,
            b.longer_is_fixed_full,
            100.0 * b.equal_length_pairs,
            b.count_probe.accuracy,
            b.count_probe.auc,
            b.count_probe.pair_accuracy
        );
        let _ = writeln!(s, "{}\n", shortcut_line(g));
        if p.groups.len() > 1 {
            let _ = writeln!(s, "Per CWE:\n\n| group | pairs | peak layer | peak acc. | last-layer acc. | peak pair acc. | longer-is-fixed | count-probe acc. |\n|---|---|---|---|---|---|---|---|");
            for g in &p.groups {
                let (pk, last) = (g.peak(), g.last());
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    g.group, g.n_pairs, pk.layer, pk.accuracy, last.accuracy, pk.pair_accuracy, g.length.longer_is_fixed, g.length.count_probe.accuracy
                );
            }
            let _ = writeln!(s);
        }
    }
    s
}

/// "Peak at layer P (acc), last layer L (acc): final-layer bottleneck / none."
pub fn bottleneck_line(g: &GroupReport) -> String {
    let (p, l) = (g.peak(), g.last());
    if p.layer < l.layer && p.accuracy > l.accuracy {
        format!(
            "Peak accuracy {:.3} at layer {} of {}; the last layer scores {:.3} ({:+.3}): the peak sits below the last layer (final-layer bottleneck).",
            p.accuracy,
            p.layer,
            l.layer,
            l.accuracy,
            l.accuracy - p.accuracy
        )
    } else {
        format!("Peak accuracy {:.3} at the last layer ({}): no final-layer bottleneck here.", p.accuracy, l.layer)
    }
}

/// Does the best probe beat length? Compared on the pairwise score, the baseline's home ground.
pub fn shortcut_line(g: &GroupReport) -> String {
    let best = g.layers.iter().map(|l| l.pair_accuracy).fold(0.0, f64::max);
    let len = g.length.longer_is_fixed.max(g.length.count_probe.pair_accuracy);
    if g.length.equal_length_pairs >= 0.999 {
        format!("Length carries no signal here: every pair's two windows have the same token count (best probe pair acc. {best:.3}).")
    } else if best > len + 0.02 {
        format!("The best probe (pair acc. {best:.3}) beats the length shortcut ({len:.3}).")
    } else {
        format!("Warning: the best probe (pair acc. {best:.3}) does not beat the length shortcut ({len:.3}); it may have learned length, not security.")
    }
}
