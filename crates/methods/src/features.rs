//! The frozen part of DeepGuard training, computed once: for every pair and side, the hidden
//! states the aggregator reads and the input of the first adapted block.
//!
//! Adapters sit on the top blocks `from..L`. Everything below `from` does not change during
//! training, so its output is computed once per example (quantized weights, our fast kernels)
//! and cached on disk. The blocks from `from` up are computed with the dense weights and the
//! differentiable ops that training uses, adapters off: this is exactly the frozen reference
//! model p_ref of the KL term (and, for `--analyzer-only`, every layer the aggregator reads).
//! A resumed or repeated run reuses the shards; the key covers model, data, window and layers.

use crate::aggregator::LayerRef;
use crate::data::{pairs_hash, window_pair, Cwe, Pair, WindowSpec};
use deepguard_runtime::files::write_atomic;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use deepguard_runtime::{ForwardOpts, ForwardOutput, LayerSelect, LogitsSelect, Model};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const SHARD: usize = 16;

/// One side of a pair: its (windowed) tokens and cached layers, each (1, seq, D).
#[derive(Clone)]
pub struct Side {
    pub ids: Vec<u32>,
    pub layers: BTreeMap<LayerRef, Tensor>,
    /// Tokens of the whole function (before windowing).
    pub full_tokens: usize,
}

#[derive(Clone)]
pub struct Example {
    pub cwe: Cwe,
    pub source: String,
    pub secure: Side,
    pub vulnerable: Side,
}

/// What to cache: the layers (below and above `from`) and the first adapted block.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureSpec {
    pub window: WindowSpec,
    pub from: usize,
    pub layers: Vec<LayerRef>,
}

impl FeatureSpec {
    /// The cached layers: the aggregator's, plus the output of block `from - 1` (the adapted
    /// blocks' input).
    pub fn cached(&self) -> Vec<LayerRef> {
        let mut v = self.layers.clone();
        if self.from > 0 && !v.contains(&LayerRef::Block(self.from - 1)) {
            v.push(LayerRef::Block(self.from - 1));
        }
        v.sort();
        v
    }
}

fn layer_name(l: LayerRef) -> String {
    match l {
        LayerRef::Block(b) => format!("block{b}"),
        LayerRef::FinalNorm => "final_norm".into(),
    }
}

/// Runs the frozen model over one side's tokens and returns the cached layers. The decoder must
/// have been prepared for training from `spec.from` (dense weights there).
pub fn side_layers(model: &Model, ids: &[u32], spec: &FeatureSpec) -> Result<BTreeMap<LayerRef, Tensor>> {
    let dec = &model.decoder;
    let l = dec.cfg.n_layers;
    let want = spec.cached();
    let blocks: Vec<usize> = want.iter().filter_map(|r| if let LayerRef::Block(b) = r { Some(*b) } else { None }).collect();
    let mut out = ForwardOutput::default();
    let x = dec.embed(&Tensor::new(ids, dec.device())?.unsqueeze(0)?)?;
    let low = ForwardOpts { keep: LayerSelect::Only(blocks.clone()), logits: LogitsSelect::None, lora: false, ..Default::default() };
    let h = dec.run_blocks(x, 0..spec.from, 0, None, &low, &mut out)?;
    let high = ForwardOpts { keep: LayerSelect::Only(blocks), keep_final_norm: true, logits: LogitsSelect::None, grad: true, lora: false, ..Default::default() };
    let h = dec.run_blocks(h, spec.from..l, 0, None, &high, &mut out)?;
    dec.head(&h, &high, &mut out)?;
    let mut m = BTreeMap::new();
    for r in want {
        let t = match r {
            LayerRef::Block(b) => out.hidden.remove(&b),
            LayerRef::FinalNorm => out.final_norm.take(),
        };
        let Some(t) = t else { bail!("layer {r:?} was not produced") };
        m.insert(r, t.detach());
    }
    Ok(m)
}

pub fn cache_key(model: &Model, pairs: &[Pair], spec: &FeatureSpec) -> String {
    let salt = format!("deepguard-guard-features-v1;{};{}", model.info.fingerprint, serde_json::to_string(spec).unwrap_or_default());
    pairs_hash(pairs, &salt)
}

/// Windows every pair and returns its cached layers, computing the missing shards (with a
/// progress bar over tokens) and saving them under `cache/<key>/` when a cache folder is given.
pub fn collect(model: &Model, pairs: &[Pair], spec: &FeatureSpec, cache: Option<&Path>, label: &str, progress: bool) -> Result<Vec<Example>> {
    let dir: Option<PathBuf> = cache.map(|c| c.join(cache_key(model, pairs, spec)));
    if let Some(d) = &dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create cache folder {}", d.display()))?;
    }
    let shard_path = |s: usize| dir.as_ref().map(|d| d.join(format!("shard-{s:05}.safetensors")));
    let mut windows = Vec::with_capacity(pairs.len());
    for p in pairs {
        windows.push(window_pair(&model.tokenizer, p, &spec.window)?);
    }
    let n_shards = pairs.len().div_ceil(SHARD);
    let todo: u64 = (0..n_shards)
        .filter(|&s| !shard_path(s).is_some_and(|p| p.exists()))
        .flat_map(|s| s * SHARD..((s + 1) * SHARD).min(pairs.len()))
        .map(|i| (windows[i].0.ids.len() + windows[i].1.ids.len()) as u64)
        .sum();
    let bar = (progress && todo > 0).then(|| crate::progress::Progress::new(todo, &format!("{label} features"), "tokens"));
    let cached = spec.cached();
    let mut examples = Vec::with_capacity(pairs.len());
    for s in 0..n_shards {
        let range = s * SHARD..((s + 1) * SHARD).min(pairs.len());
        let loaded = match shard_path(s).filter(|p| p.exists()) {
            Some(p) => Some(candle_core::safetensors::load(&p, &Device::Cpu).with_context(|| format!("cannot read feature shard {} (delete it to recompute)", p.display()))?),
            None => None,
        };
        let mut save: Vec<(String, Tensor)> = Vec::new();
        for i in range.clone() {
            let mut sides = Vec::with_capacity(2);
            for (tag, w) in [("sec", &windows[i].1), ("vul", &windows[i].0)] {
                let layers = match &loaded {
                    Some(t) => shard_side(t, i, tag, &cached, w.ids.len(), &shard_path(s).unwrap_or_default())?,
                    None => {
                        let m = side_layers(model, &w.ids, spec).with_context(|| format!("{}: forward pass", pairs[i].source))?;
                        for (r, t) in &m {
                            save.push((format!("{i}.{tag}.{}", layer_name(*r)), t.squeeze(0)?));
                        }
                        if let Some(b) = &bar {
                            b.inc(w.ids.len() as u64);
                        }
                        m
                    }
                };
                sides.push(Side { ids: w.ids.clone(), layers, full_tokens: w.full_tokens });
            }
            let vulnerable = sides.pop().expect("two sides");
            let secure = sides.pop().expect("two sides");
            examples.push(Example { cwe: pairs[i].cwe, source: pairs[i].source.clone(), secure, vulnerable });
        }
        if let (Some(p), false) = (shard_path(s), save.is_empty()) {
            let save: HashMap<_, _> = save.into_iter().collect();
            deepguard_runtime::files::atomically(&p, |tmp| Ok(candle_core::safetensors::save(&save, tmp)?))?;
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    if let Some(d) = &dir {
        write_atomic(&d.join("spec.json"), serde_json::to_string_pretty(spec)?.as_bytes())?;
    }
    Ok(examples)
}

fn shard_side(t: &HashMap<String, Tensor>, i: usize, tag: &str, cached: &[LayerRef], len: usize, path: &Path) -> Result<BTreeMap<LayerRef, Tensor>> {
    let mut m = BTreeMap::new();
    for &r in cached {
        let name = format!("{i}.{tag}.{}", layer_name(r));
        let Some(x) = t.get(&name) else { bail!("feature shard {} lacks `{name}` (delete it to recompute)", path.display()) };
        if x.dim(0)? != len {
            bail!("feature shard {}: `{name}` has {} positions, the window has {len} (delete it to recompute)", path.display(), x.dim(0)?);
        }
        m.insert(r, x.unsqueeze(0)?);
    }
    Ok(m)
}
