//! Per-CWE steering vectors (Surgical Repair): v = mean(h_L | secure) - mean(h_L | vulnerable),
//! their files in llama.cpp's control-vector GGUF layout, the automatic layer choice, the hook,
//! probe-then-steer routing, and the layer x alpha sweep.
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

use crate::data::{window_pair, Cwe, Pair, WindowSpec};
use crate::probe::logreg::{LogReg, Matrix};
use crate::probe::{Activations, GroupReport, Pooling};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use deepguard_runtime::hooks::AddVector;
use deepguard_runtime::{ForwardOpts, ForwardOutput, LayerSelect, LogitsSelect, Model};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One steering vector with its provenance and its probe.
#[derive(Debug, Clone, Serialize)]
pub struct SteerVector {
    /// None: built from all CWEs together.
    pub cwe: Option<Cwe>,
    /// Decoder block whose output is steered (0-based; = llama.cpp's `direction.<layer>`).
    pub layer: usize,
    #[serde(skip)]
    pub direction: Vec<f32>,
    pub model_arch: String,
    pub model_fingerprint: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_pairs: usize,
    /// How the representations were taken (window, pooling).
    pub position: String,
    /// Secure-vs-vulnerable probe at this layer (raw space; p = sigmoid(w.h + b) is p(secure)).
    #[serde(skip)]
    pub probe: Option<LogReg>,
    /// Mean representation of this CWE's code (both sides), for routing prompts to a CWE.
    #[serde(skip)]
    pub centroid: Vec<f32>,
}

fn meta_str<'a>(c: &'a gguf_file::Content, k: &str) -> Option<&'a str> {
    c.metadata.get(k).and_then(|v| v.to_string().ok()).map(|s| s.as_str())
}

fn meta_u64(c: &gguf_file::Content, k: &str) -> Option<u64> {
    c.metadata.get(k).and_then(deepguard_runtime::gguf::value_to_u64)
}

fn meta_f32s(c: &gguf_file::Content, k: &str) -> Option<Vec<f32>> {
    match c.metadata.get(k)? {
        Value::Array(a) => a.iter().map(|v| v.to_f32().ok()).collect(),
        _ => None,
    }
}

impl SteerVector {
    pub fn norm(&self) -> f32 {
        self.direction.iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    /// Writes the vector as a llama.cpp control vector (one F32 tensor `direction.<layer>`,
    /// `controlvector.*` keys) plus `deepguard.*` keys, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.layer == 0 {
            bail!("{}: block 0 cannot be stored in llama.cpp's control-vector format (direction.0 is invalid there); choose a layer >= 1", path.display());
        }
        let dev = Device::Cpu;
        let t = QTensor::quantize(&Tensor::from_slice(&self.direction, self.hidden, &dev)?, GgmlDType::F32)?;
        let arr = |v: &[f32]| Value::Array(v.iter().map(|x| Value::F32(*x)).collect());
        let mut md: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("controlvector".into())),
            ("controlvector.model_hint".into(), Value::String(self.model_arch.clone())),
            ("controlvector.layer_count".into(), Value::I32(1)),
            ("deepguard.cwe".into(), Value::String(self.cwe.map(|c| c.to_string()).unwrap_or_else(|| "all".into()))),
            ("deepguard.layer".into(), Value::U32(self.layer as u32)),
            ("deepguard.model_fingerprint".into(), Value::String(self.model_fingerprint.clone())),
            ("deepguard.n_layers".into(), Value::U32(self.n_layers as u32)),
            ("deepguard.hidden_size".into(), Value::U32(self.hidden as u32)),
            ("deepguard.n_pairs".into(), Value::U32(self.n_pairs as u32)),
            ("deepguard.position".into(), Value::String(self.position.clone())),
            ("deepguard.centroid".into(), arr(&self.centroid)),
        ];
        if let Some(p) = &self.probe {
            md.push(("deepguard.probe.weights".into(), arr(&p.w)));
            md.push(("deepguard.probe.bias".into(), Value::F32(p.b)));
        }
        let name = format!("direction.{}", self.layer);
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut buf = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &md_refs, &[(name.as_str(), &t)])?;
        deepguard_runtime::files::write_atomic(path, &buf.into_inner())
    }

    pub fn load(path: &Path) -> Result<SteerVector> {
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open steering vector {}", path.display()))?;
        let size = f.metadata().with_context(|| format!("cannot read steering vector {}", path.display()))?.len();
        let c = deepguard_runtime::gguf::read_content(&mut std::io::BufReader::new(&mut f), size).map_err(|e| anyhow!("{}: not a readable GGUF file: {e}", path.display()))?;
        if meta_str(&c, "general.architecture") != Some("controlvector") {
            bail!("{}: not a control vector (general.architecture is {:?})", path.display(), meta_str(&c, "general.architecture"));
        }
        let missing = |k: &str| anyhow!("{}: metadata `{k}` is missing (not written by deepguard steer build?)", path.display());
        let layer = meta_u64(&c, "deepguard.layer").ok_or_else(|| missing("deepguard.layer"))? as usize;
        let name = format!("direction.{layer}");
        if !c.tensor_infos.contains_key(&name) {
            bail!("{}: tensor `{name}` is missing", path.display());
        }
        let direction = c
            .tensor(&mut f, &name, &Device::Cpu)
            .and_then(|t| t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| anyhow!("{}: cannot read tensor `{name}`: {e}", path.display()))?;
        let hidden = meta_u64(&c, "deepguard.hidden_size").ok_or_else(|| missing("deepguard.hidden_size"))? as usize;
        if direction.len() != hidden {
            bail!("{}: `{name}` has {} values but the file says hidden size {hidden}", path.display(), direction.len());
        }
        let cwe = match meta_str(&c, "deepguard.cwe").ok_or_else(|| missing("deepguard.cwe"))? {
            "all" => None,
            s => Some(Cwe::parse(s).with_context(|| path.display().to_string())?),
        };
        let probe = match (meta_f32s(&c, "deepguard.probe.weights"), c.metadata.get("deepguard.probe.bias").and_then(|v| v.to_f32().ok())) {
            (Some(w), Some(b)) if w.len() == hidden => Some(LogReg { w, b }),
            _ => None,
        };
        Ok(SteerVector {
            cwe,
            layer,
            direction,
            model_arch: meta_str(&c, "controlvector.model_hint").unwrap_or("").to_string(),
            model_fingerprint: meta_str(&c, "deepguard.model_fingerprint").ok_or_else(|| missing("deepguard.model_fingerprint"))?.to_string(),
            n_layers: meta_u64(&c, "deepguard.n_layers").unwrap_or(0) as usize,
            hidden,
            n_pairs: meta_u64(&c, "deepguard.n_pairs").unwrap_or(0) as usize,
            position: meta_str(&c, "deepguard.position").unwrap_or("").to_string(),
            probe,
            centroid: meta_f32s(&c, "deepguard.centroid").unwrap_or_default(),
        })
    }

    /// Refuses a vector built for another model: hidden size, layer range, fingerprint.
    pub fn check_model(&self, model: &Model, path: &Path) -> Result<()> {
        let cfg = model.cfg();
        if self.hidden != cfg.hidden_size {
            bail!("{}: vector has dimension {} but model {} has hidden size {}", path.display(), self.hidden, model.info.path.display(), cfg.hidden_size);
        }
        if self.layer >= cfg.n_layers {
            bail!("{}: vector is for block {} but the model has {} blocks", path.display(), self.layer, cfg.n_layers);
        }
        if self.model_fingerprint != model.info.fingerprint {
            bail!(
                "{}: vector was built for model fingerprint {} but {} has fingerprint {}",
                path.display(),
                self.model_fingerprint,
                model.info.path.display(),
                model.info.fingerprint
            );
        }
        Ok(())
    }

    /// The residual hook: alpha * v after block `layer` at every position >= `from_pos`.
    pub fn hook(&self, alpha: f64, from_pos: usize) -> Result<AddVector> {
        AddVector::new(self.layer, &Tensor::from_slice(&self.direction, self.hidden, &Device::Cpu)?, alpha, from_pos)
    }
}

/// Mean difference (secure - vulnerable) and mean of both sides over the pairs `idx`.
pub fn mean_difference(x: &Matrix, idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let d = x.cols;
    let (mut diff, mut centroid) = (vec![0f64; d], vec![0f64; d]);
    for &p in idx {
        for (j, (&s, &v)) in x.row(2 * p + 1).iter().zip(x.row(2 * p)).enumerate() {
            diff[j] += (s - v) as f64;
            centroid[j] += (s + v) as f64;
        }
    }
    let n = idx.len().max(1) as f64;
    (diff.iter().map(|v| (v / n) as f32).collect(), centroid.iter().map(|v| (v / (2.0 * n)) as f32).collect())
}

/// One vector per CWE (and one over all pairs) at `layer`, each with a probe fitted on its pairs.
pub fn build(model: &Model, acts: &Activations, pooling: Pooling, layer: usize, spec: &WindowSpec, l2: f64) -> Result<Vec<SteerVector>> {
    if layer >= acts.n_layers {
        bail!("layer {layer} does not exist (the model has {} blocks)", acts.n_layers);
    }
    let x = acts.layer(pooling, layer);
    let mut cwes: Vec<Option<Cwe>> = acts.cwes.iter().map(|&c| Some(c)).collect();
    cwes.sort();
    cwes.dedup();
    cwes.insert(0, None);
    let position = format!(
        "output of block {layer}, {} pooling over a window of {} tokens aligned {:?}{}",
        pooling.name(),
        spec.budget,
        spec.align,
        if spec.equal_length { ", equal-length sides" } else { "" }
    );
    let mut out = Vec::new();
    for cwe in cwes {
        let idx: Vec<usize> = (0..acts.n_pairs()).filter(|&i| cwe.is_none_or(|c| acts.cwes[i] == c)).collect();
        let (direction, centroid) = mean_difference(&x, &idx);
        let items: Vec<usize> = idx.iter().flat_map(|&p| [2 * p, 2 * p + 1]).collect();
        let y: Vec<bool> = (0..items.len()).map(|i| i % 2 == 1).collect();
        let probe = LogReg::fit(&x.select(&items), &y, l2);
        out.push(SteerVector {
            cwe,
            layer,
            direction,
            model_arch: model.cfg().arch.name().to_string(),
            model_fingerprint: model.info.fingerprint.clone(),
            n_layers: acts.n_layers,
            hidden: acts.hidden,
            n_pairs: idx.len(),
            position: position.clone(),
            probe: Some(probe),
            centroid,
        });
    }
    Ok(out)
}

/// File name of a vector in a vector folder: `cwe-089.gguf`, or `all.gguf`.
pub fn file_name(cwe: Option<Cwe>) -> String {
    cwe.map(|c| c.slug()).unwrap_or_else(|| "all".into()) + ".gguf"
}

/// The default steering strength: alpha 2 kept pass@1 within noise of the base model on the dev
/// set at blocks 8 and 16, while alpha 4 broke the code (pass@1 -27 points; `deepguard compare`,
/// docs/surgical-repair.md).
pub const DEFAULT_ALPHA: f64 = 2.0;

/// The default steering block for a model of `n_layers` blocks: a third of the way up (block 8
/// of Qwen2.5-Coder-0.5B's 24). Chosen by `deepguard compare` on generated dev code among blocks
/// 8, 12 and 16 at alpha 1-4: the cell with the best sec-pass@1 among those that kept pass@1
/// within 5 points of base. No cell made the code measurably more secure (docs/surgical-repair.md).
pub fn default_layer(n_layers: usize) -> usize {
    n_layers / 3
}

/// The steering layer from probe results: among blocks >= 1 whose accuracy is within `tol` of
/// the peak, the one with the largest relative direction norm. Early layers often separate the
/// classes with a direction of near-zero size; a vector there would steer nothing.
pub fn choose_layer(g: &GroupReport, tol: f64) -> usize {
    let peak = g.layers.iter().skip(1).map(|l| l.accuracy).fold(0.0, f64::max);
    g.layers.iter().skip(1).filter(|l| l.accuracy >= peak - tol).max_by(|a, b| a.rel_norm.total_cmp(&b.rel_norm)).map(|l| l.layer).unwrap_or(1)
}

/// What `--steer` names: a vector file or folder, and which vector.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// The only vector of a file.
    File,
    Cwe(Cwe),
    /// Probe-then-steer over every vector of a folder.
    Auto,
}

/// Parses `PATH`, `PATH:CWE` or `PATH:auto`.
pub fn parse_steer_arg(s: &str) -> Result<(PathBuf, Selector)> {
    if let Some((p, sel)) = s.rsplit_once(':') {
        if sel == "auto" {
            return Ok((PathBuf::from(p), Selector::Auto));
        }
        if let Ok(c) = Cwe::parse(sel) {
            return Ok((PathBuf::from(p), Selector::Cwe(c)));
        }
    }
    Ok((PathBuf::from(s), Selector::File))
}

/// Loads the vectors `--steer` names, all checked against `model`.
pub fn load_selected(path: &Path, sel: &Selector, model: &Model) -> Result<Vec<(PathBuf, SteerVector)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        match sel {
            Selector::Cwe(c) => vec![path.join(file_name(Some(*c)))],
            _ => {
                let mut f: Vec<PathBuf> = std::fs::read_dir(path)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "gguf")).collect();
                f.sort();
                f
            }
        }
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        bail!("{}: no steering vectors (*.gguf) here", path.display());
    }
    let mut out = Vec::new();
    for f in files {
        if !f.exists() {
            bail!("{}: no such steering vector (build it with `deepguard steer build`)", f.display());
        }
        let v = SteerVector::load(&f)?;
        v.check_model(model, &f)?;
        if let Selector::Cwe(c) = sel {
            if v.cwe != Some(*c) {
                bail!("{}: holds the vector for {}, not {c}", f.display(), v.cwe.map(|c| c.to_string()).unwrap_or("all CWEs".into()));
            }
        }
        out.push((f, v));
    }
    Ok(out)
}

/// Probe-then-steer's decision for one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Index of the chosen vector (nearest centroid), if any has a probe.
    pub chosen: Option<usize>,
    pub cwe: Option<Cwe>,
    /// The chosen CWE probe's p(secure) at the prompt's last token.
    pub p_secure: f32,
    /// Steer only when the probe says the code heading this way looks vulnerable.
    pub apply: bool,
}

/// Routes a prompt: nearest CWE centroid at the vectors' layer (last prompt token), then that
/// CWE's probe decides whether to steer (p(secure) < `threshold`). The pooled `all` vector is
/// only a fallback when no per-CWE vector exists.
pub fn route(model: &Model, vectors: &[SteerVector], prompt: &[u32], threshold: f32) -> Result<Route> {
    let mut layers: Vec<usize> = vectors.iter().map(|v| v.layer).collect();
    layers.sort();
    layers.dedup();
    let ids = Tensor::new(prompt, model.decoder.device())?.unsqueeze(0)?;
    let opts = ForwardOpts { keep: LayerSelect::Only(layers), logits: LogitsSelect::None, lora: true, ..Default::default() };
    let out = model.decoder.forward(&ids, 0, None, &opts)?;
    let last = |l: usize| -> Result<Vec<f32>> {
        let h = &out.hidden[&l];
        Ok(h.narrow(1, h.dim(1)? - 1, 1)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let per_cwe = vectors.iter().any(|v| v.cwe.is_some());
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in vectors.iter().enumerate() {
        if v.probe.is_none() || v.centroid.len() != v.hidden || (per_cwe && v.cwe.is_none()) {
            continue;
        }
        let h = last(v.layer)?;
        let dist: f32 = h.iter().zip(&v.centroid).map(|(a, b)| (a - b) * (a - b)).sum();
        if best.is_none_or(|(_, d)| dist < d) {
            best = Some((i, dist));
        }
    }
    Ok(match best {
        None => Route { chosen: None, cwe: None, p_secure: f32::NAN, apply: false },
        Some((i, _)) => {
            let v = &vectors[i];
            let p = v.probe.as_ref().unwrap().prob(&last(v.layer)?);
            Route { chosen: Some(i), cwe: v.cwe, p_secure: p, apply: p < threshold }
        }
    })
}

/// One cell of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepCell {
    pub layer: usize,
    pub alpha: f64,
    /// Steered minus unsteered change of [mean log p(changed tokens | secure side) - mean log
    /// p(changed tokens | vulnerable side)], nats per token: how much more the model prefers the
    /// secure code over the vulnerable code at the lines that differ.
    pub security_gain: f64,
    /// Unsteered minus steered mean log p of the unchanged tokens (nats per token): damage to
    /// ordinary code.
    pub fluency_cost: f64,
    pub n_pairs: usize,
}

/// Mean log-probabilities of the changed and the unchanged tokens of `ids` given `logits`
/// (t, vocab), teacher-forced.
fn changed_unchanged_logprob(logits: &Tensor, ids: &[u32], changed: &std::ops::Range<usize>) -> Result<(f64, f64)> {
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let (mut c, mut nc, mut u, mut nu) = (0.0, 0, 0.0, 0);
    for i in 1..ids.len() {
        let r = &rows[i - 1];
        let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + r.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let lp = r[ids[i] as usize] as f64 - lse;
        if changed.contains(&i) {
            c += lp;
            nc += 1;
        } else {
            u += lp;
            nu += 1;
        }
    }
    Ok((c / nc.max(1) as f64, u / nu.max(1) as f64))
}

/// Tries every layer x alpha on validation pairs: vectors for each layer are built from the
/// training activations (per CWE; pairs of a CWE without training pairs are skipped), added at
/// every position of the validation windows (teacher forcing: the whole window is "generated"
/// code), and scored by [`SweepCell`]'s security gain and fluency cost. Lower blocks run once
/// per side; only blocks above the steered one are re-run per cell.
pub fn sweep(
    model: &Model,
    train: &Activations,
    pooling: Pooling,
    val: &[Pair],
    spec: &WindowSpec,
    layers: &[usize],
    alphas: &[f64],
    mut on_pair: impl FnMut(usize),
) -> Result<Vec<SweepCell>> {
    let n_layers = model.cfg().n_layers;
    for &l in layers {
        if l >= n_layers {
            bail!("layer {l} does not exist (the model has {n_layers} blocks)");
        }
    }
    // vectors[layer index][cwe]
    let mut vecs: Vec<std::collections::HashMap<Cwe, Tensor>> = Vec::new();
    for &l in layers {
        let x = train.layer(pooling, l);
        let mut m = std::collections::HashMap::new();
        let mut cwes = train.cwes.clone();
        cwes.sort();
        cwes.dedup();
        for c in cwes {
            let idx: Vec<usize> = (0..train.n_pairs()).filter(|&i| train.cwes[i] == c).collect();
            m.insert(c, Tensor::from_vec(mean_difference(&x, &idx).0, train.hidden, &Device::Cpu)?);
        }
        vecs.push(m);
    }
    let dev = model.decoder.device();
    let mut gain = vec![0.0; layers.len() * alphas.len()];
    let mut cost = vec![0.0; layers.len() * alphas.len()];
    let mut n = 0;
    for (pi, p) in val.iter().enumerate() {
        on_pair(pi);
        if !vecs[0].contains_key(&p.cwe) {
            continue;
        }
        let (wv, wf) = window_pair(&model.tokenizer, p, spec)?;
        // [side][cell] = (changed, unchanged)
        let mut base = Vec::new();
        let mut steered = Vec::new();
        for w in [&wv, &wf] {
            let ids = Tensor::new(w.ids.as_slice(), dev)?.unsqueeze(0)?;
            let opts = ForwardOpts { keep: LayerSelect::Only(layers.to_vec()), logits: LogitsSelect::All, lora: true, ..Default::default() };
            let out = model.decoder.forward(&ids, 0, None, &opts)?;
            base.push(changed_unchanged_logprob(&out.logits.unwrap().squeeze(0)?, &w.ids, &w.changed)?);
            let mut cells = Vec::new();
            for (li, &l) in layers.iter().enumerate() {
                let v = &vecs[li][&p.cwe];
                for &a in alphas {
                    let h = out.hidden[&l].broadcast_add(&(v * a)?)?;
                    let o = ForwardOpts { logits: LogitsSelect::All, lora: true, ..Default::default() };
                    let mut tmp = ForwardOutput::default();
                    let h = model.decoder.run_blocks(h, l + 1..n_layers, 0, None, &o, &mut tmp)?;
                    model.decoder.head(&h, &o, &mut tmp)?;
                    cells.push(changed_unchanged_logprob(&tmp.logits.unwrap().squeeze(0)?, &w.ids, &w.changed)?);
                }
            }
            steered.push(cells);
        }
        let base_margin = base[1].0 - base[0].0;
        for k in 0..gain.len() {
            gain[k] += (steered[1][k].0 - steered[0][k].0) - base_margin;
            cost[k] += ((base[0].1 - steered[0][k].1) + (base[1].1 - steered[1][k].1)) / 2.0;
        }
        n += 1;
    }
    if n == 0 {
        bail!("no validation pair has a CWE with training pairs");
    }
    let mut cells = Vec::new();
    for (li, &l) in layers.iter().enumerate() {
        for (ai, &a) in alphas.iter().enumerate() {
            let k = li * alphas.len() + ai;
            cells.push(SweepCell { layer: l, alpha: a, security_gain: gain[k] / n as f64, fluency_cost: cost[k] / n as f64, n_pairs: n });
        }
    }
    Ok(cells)
}

/// The best cell: the largest security gain among cells whose fluency cost is at most
/// `max_cost` nats per token.
pub fn best_cell(cells: &[SweepCell], max_cost: f64) -> Option<&SweepCell> {
    cells.iter().filter(|c| c.fluency_cost <= max_cost).max_by(|a, b| a.security_gain.total_cmp(&b.security_gain))
}

/// The hooks steering `s` applies to this prompt, and a line saying what was chosen.
pub fn hooks_for(model: &Model, s: &crate::spec::SteerSpec, prompt: &[u32]) -> Result<(Vec<AddVector>, String)> {
    let (path, sel, alpha) = (&s.vectors, &s.select, s.alpha);
    let vectors: Vec<(PathBuf, SteerVector)> = load_selected(path, sel, model)?;
    let from = prompt.len().saturating_sub(1);
    let n_layers = model.cfg().n_layers;
    // The block the vector is added after: its own, or the spec's `layer=L`.
    let hook = |v: &SteerVector| -> Result<(AddVector, usize)> {
        let layer = s.layer.unwrap_or(v.layer);
        if layer == 0 || layer >= n_layers {
            bail!("steer {}: layer={layer} is not a block of this model (1..{})", s.arg(), n_layers - 1);
        }
        let mut h = v.hook(alpha, from)?;
        h.layer = layer;
        Ok((h, layer))
    };
    if *sel == Selector::Auto {
        let vs: Vec<SteerVector> = vectors.iter().map(|v| v.1.clone()).collect();
        let r = route(model, &vs, prompt, 0.5)?;
        let Some(i) = r.chosen.filter(|_| r.apply) else {
            let why = match r.cwe {
                Some(c) => format!("probe-then-steer: nearest CWE {c}, p(secure) {:.2} >= 0.5: not steering", r.p_secure),
                None => "probe-then-steer: no vector with a probe: not steering".to_string(),
            };
            return Ok((vec![], why));
        };
        let v = &vectors[i];
        let (h, layer) = hook(&v.1)?;
        return Ok((vec![h], format!("probe-then-steer: nearest CWE {}, p(secure) {:.2}: steering with {} (block {layer}, alpha {alpha})", r.cwe.map(|c| c.to_string()).unwrap_or("all".into()), r.p_secure, v.0.display())));
    }
    if vectors.len() != 1 {
        bail!("{}: holds {} vectors; name one with {}:CWE or use {}:auto", path.display(), vectors.len(), path.display(), path.display());
    }
    let v = &vectors[0];
    let (h, layer) = hook(&v.1)?;
    Ok((vec![h], format!("steering with {} ({}, block {layer}, alpha {alpha})", v.0.display(), v.1.cwe.map(|c| c.to_string()).unwrap_or("all".into()))))
}

/// The CWE the routing probe of the vectors at `path` picks for a prompt (nearest centroid at
/// the vectors' block, last prompt token), whatever the probe says about its security; None when
/// no vector has a probe.
pub fn route_cwe(model: &Model, path: &Path, prompt: &[u32]) -> Result<Option<Cwe>> {
    let vs: Vec<SteerVector> = load_selected(path, &Selector::Auto, model)?.into_iter().map(|v| v.1).collect();
    Ok(route(model, &vs, prompt, 0.5)?.cwe)
}
