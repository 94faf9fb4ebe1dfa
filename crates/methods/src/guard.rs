//! A trained DeepGuard: the artefacts on disk and their use at inference.
//!
//! Folder layout (written by `deepguard train`):
//! - `adapter_config.json` + `adapter_model.safetensors`: the LoRA adapters in Hugging Face PEFT
//!   format (HF parameter names and row order, loadable with `PeftModel.from_pretrained`);
//! - `guard.safetensors`: the aggregator, the analyzer (with E_sec) and T_stats (`prior.t_stats`),
//!   with metadata: the model fingerprint, the training settings and the data hash.
//!
//! At inference ([`Guard::score`]) one forward pass over the prompt gives the analyzer's token
//! scores; their mean s_prompt sets the logit bias ([`crate::prior::PriorBias`]).

use crate::aggregator::{Aggregator, LayerRef, Mode};
use crate::analyzer::{sequence_score, Analyzer};
use crate::params::Params;
use crate::prior::{BiasRule, PriorBias};
use deepguard_runtime::files::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use deepguard_runtime::config::RopeStyle;
use deepguard_runtime::lora::{LoraConfig, Proj};
use deepguard_runtime::{ForwardOpts, LayerSelect, LogitsSelect, Model};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const GUARD_FILE: &str = "guard.safetensors";
pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
const FORMAT: &str = "deepguard-guard-v1";

/// What a guard was built for and from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardMeta {
    pub model_fingerprint: String,
    pub model_arch: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub aggregator: Mode,
    pub layers: Vec<LayerRef>,
    /// The adapters' settings (None: analyzer-only guard, base weights).
    pub lora: Option<LoraConfig>,
    pub prior_rule: String,
    pub data_hash: String,
    /// Training settings, as JSON.
    pub settings: serde_json::Value,
    /// The CWEs of its training pairs (`CWE-089` form; empty for guards of earlier releases).
    #[serde(default)]
    pub cwes: Vec<String>,
}

pub struct Guard {
    pub meta: GuardMeta,
    pub aggregator: Aggregator,
    pub analyzer: Analyzer,
    pub t_stats: Vec<f32>,
    /// Adapter weights by PEFT name, in the decoder's row order.
    pub adapters: HashMap<String, Tensor>,
}

/// Row order of q/k projections: llama.cpp permutes them in llama GGUF files (interleaved rope);
/// PEFT files use the HF order. `to_hf` maps decoder rows to HF rows, else the reverse.
fn permute_rows(t: &Tensor, heads: usize, to_hf: bool) -> Result<Tensor> {
    let rows = t.dim(0)?;
    let hd = rows / heads;
    let half = hd / 2;
    let idx: Vec<u32> = (0..rows)
        .map(|r| {
            let (h, rem) = (r / hd, r % hd);
            let src = if to_hf { h * hd + 2 * (rem % half) + rem / half } else { h * hd + (rem % 2) * half + rem / 2 };
            src as u32
        })
        .collect();
    Ok(t.index_select(&Tensor::new(idx, t.device())?, 0)?)
}

/// The heads whose rows a PEFT tensor name's B matrix must be permuted by, if any.
fn permuted_heads(model_cfg: &deepguard_runtime::ModelConfig, name: &str) -> Option<usize> {
    if model_cfg.rope_style != RopeStyle::Interleaved || !name.ends_with("lora_B.weight") {
        return None;
    }
    if name.contains(".q_proj.") {
        Some(model_cfg.n_heads)
    } else if name.contains(".k_proj.") {
        Some(model_cfg.n_kv_heads)
    } else {
        None
    }
}

impl Guard {
    pub fn heads_params(&self) -> Params {
        let mut p = self.aggregator.params();
        p.extend("", &self.analyzer.params());
        p
    }

    /// Writes the three files into `dir` (each atomically).
    pub fn save(&self, dir: &Path, model: &Model, adapters: &Params) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cfg = model.cfg();
        if let Some(l) = &self.meta.lora {
            let mut named: Vec<(String, Tensor)> = Vec::new();
            for (k, v) in &adapters.vars {
                let t = v.as_tensor().clone();
                let t = match permuted_heads(cfg, k) {
                    Some(h) => permute_rows(&t, h, true)?,
                    None => t,
                };
                named.push((k.clone(), t));
            }
            let bytes = safetensors::tensor::serialize(named, None).map_err(|e| anyhow!("{e}"))?;
            write_atomic(&dir.join(ADAPTER_FILE), &bytes)?;
            let mut layers = l.layers.clone();
            if layers.is_empty() {
                layers = (0..cfg.n_layers).collect();
            }
            let pc = serde_json::json!({
                "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": l.rank, "lora_alpha": l.alpha,
                "lora_dropout": l.dropout, "bias": "none", "fan_in_fan_out": false, "inference_mode": true,
                "target_modules": l.targets.iter().map(|p| p.hf_name()).collect::<Vec<_>>(),
                "layers_to_transform": layers, "init_lora_weights": true, "use_rslora": false, "use_dora": false,
                "base_model_name_or_path": model.info.name.clone().unwrap_or_default(),
                "revision": null, "modules_to_save": null,
            });
            write_atomic(&dir.join(ADAPTER_CONFIG), serde_json::to_string_pretty(&pc)?.as_bytes())?;
        }
        let mut named: Vec<(String, Tensor)> = self.heads_params().tensors().into_iter().collect();
        named.push(("prior.t_stats".into(), Tensor::new(self.t_stats.as_slice(), &Device::Cpu)?));
        let mut md = HashMap::new();
        md.insert("format".to_string(), FORMAT.to_string());
        md.insert("meta".to_string(), serde_json::to_string(&self.meta)?);
        md.insert("model.fingerprint".to_string(), self.meta.model_fingerprint.clone());
        let bytes = safetensors::tensor::serialize(named, Some(md)).map_err(|e| anyhow!("{e}"))?;
        write_atomic(&dir.join(GUARD_FILE), &bytes)
    }

    /// What a guard folder says of itself, without a model.
    pub fn read_meta(dir: &Path) -> Result<GuardMeta> {
        let gp = dir.join(GUARD_FILE);
        let bytes = std::fs::read(&gp).with_context(|| format!("cannot read {} (is {} a guard folder written by `deepguard train`?)", gp.display(), dir.display()))?;
        Self::meta_of(&gp, &bytes)
    }

    fn meta_of(gp: &Path, bytes: &[u8]) -> Result<GuardMeta> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("{}: not a safetensors file: {e}", gp.display()))?;
        let md = header.metadata().clone().unwrap_or_default();
        if md.get("format").map(String::as_str) != Some(FORMAT) {
            bail!("{}: not a deepguard guard file (format {:?})", gp.display(), md.get("format"));
        }
        serde_json::from_str(md.get("meta").ok_or_else(|| anyhow!("{}: metadata lacks `meta`", gp.display()))?).with_context(|| format!("{}: bad metadata", gp.display()))
    }

    /// Loads a guard folder for `model`, refusing one built for another model.
    pub fn load(dir: &Path, model: &Model) -> Result<Guard> {
        let gp = dir.join(GUARD_FILE);
        let bytes = std::fs::read(&gp).with_context(|| format!("cannot read {} (is {} a guard folder written by `deepguard train`?)", gp.display(), dir.display()))?;
        let meta = Self::meta_of(&gp, &bytes)?;
        let cfg = model.cfg();
        if meta.hidden != cfg.hidden_size || meta.n_layers != cfg.n_layers || meta.vocab != cfg.vocab_size {
            bail!(
                "{}: built for a model with {} layers, hidden size {}, vocabulary {}; this model has {}, {}, {}",
                gp.display(),
                meta.n_layers,
                meta.hidden,
                meta.vocab,
                cfg.n_layers,
                cfg.hidden_size,
                cfg.vocab_size
            );
        }
        if meta.layers.is_empty() || meta.layers.len() > cfg.n_layers + 1 || meta.layers.iter().any(|r| matches!(r, LayerRef::Block(b) if *b >= cfg.n_layers)) {
            bail!("{}: the aggregator reads layers {:?}, not layers of a {}-block model", gp.display(), meta.layers, cfg.n_layers);
        }
        if let Some(l) = &meta.lora {
            l.validate(cfg.n_layers).with_context(|| format!("{}: bad adapter settings", gp.display()))?;
        }
        if meta.model_fingerprint != model.info.fingerprint {
            bail!("{}: built for model {} but {} has fingerprint {}", gp.display(), meta.model_fingerprint, model.info.path.display(), model.info.fingerprint);
        }
        let dev = model.decoder.device();
        let tensors = candle_core::safetensors::load_buffer(&bytes, dev)?;
        let aggregator = Aggregator::new(meta.aggregator, meta.layers.clone(), meta.hidden, 0, dev)?;
        let analyzer = Analyzer::new(meta.hidden, meta.vocab, 0, dev)?;
        aggregator.params().load(&tensors, &gp.display().to_string())?;
        analyzer.params().load(&tensors, &gp.display().to_string())?;
        let t_stats = tensors.get("prior.t_stats").ok_or_else(|| anyhow!("{}: lacks prior.t_stats", gp.display()))?.to_vec1::<f32>()?;
        let adapters = match meta.lora {
            Some(_) => read_peft(dir, cfg)?.1,
            None => HashMap::new(),
        };
        Ok(Guard { meta, aggregator, analyzer, t_stats, adapters })
    }

    /// Attaches the trained adapters to the model (no-op for an analyzer-only guard).
    pub fn attach(&self, model: &mut Model) -> Result<()> {
        match &self.meta.lora {
            Some(l) => attach_adapters(model, l, &self.adapters),
            None => Ok(()),
        }
    }

    /// The analyzer's score of every token of `ids` and their mean (the sequence score), from
    /// one forward pass of the model as it is (attach the adapters first).
    pub fn score(&self, model: &Model, ids: &[u32]) -> Result<(Vec<f32>, f32)> {
        if ids.is_empty() {
            bail!("nothing to score: no tokens");
        }
        let blocks: Vec<usize> = self.meta.layers.iter().filter_map(|r| if let LayerRef::Block(b) = r { Some(*b) } else { None }).collect();
        let opts = ForwardOpts { keep: LayerSelect::Only(blocks), keep_final_norm: true, logits: LogitsSelect::None, lora: true, ..Default::default() };
        let dev = model.decoder.device();
        let ids_t = Tensor::new(ids, dev)?.unsqueeze(0)?;
        let mut out = model.decoder.forward(&ids_t, 0, None, &opts)?;
        let mut hs = Vec::new();
        for r in &self.meta.layers {
            hs.push(match r {
                LayerRef::Block(b) => out.hidden.remove(b).ok_or_else(|| anyhow!("block {b} output missing"))?,
                LayerRef::FinalNorm => out.final_norm.clone().ok_or_else(|| anyhow!("final norm missing"))?,
            });
        }
        let agg = self.aggregator.forward(&hs)?;
        let s = self.analyzer.token_scores(&agg, &ids_t, None)?;
        let seq = sequence_score(&s, &s.ones_like()?)?.to_vec1::<f32>()?[0];
        Ok((s.squeeze(0)?.to_vec1::<f32>()?, seq))
    }

    /// Guided decoding for one prompt: scores it (one forward pass) and returns the logit bias
    /// to add at every step, with the prompt's score.
    pub fn guidance(&self, model: &Model, prompt_ids: &[u32], rule: BiasRule, strength: f32) -> Result<(PriorBias, f32)> {
        let (_, s) = self.score(model, prompt_ids)?;
        Ok((self.bias(s, rule, strength)?, s))
    }

    /// The logit bias for a prompt with sequence score `s_prompt`.
    pub fn bias(&self, s_prompt: f32, rule: BiasRule, strength: f32) -> Result<PriorBias> {
        PriorBias::new(&self.t_stats, s_prompt, rule, strength)
    }
}

/// Reads a PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`) for a
/// model with config `cfg`: its settings and its tensors by PEFT name, rows in the decoder's
/// order. Any PEFT LoRA adapter without biases or rank patterns loads, not only ours.
pub fn read_peft(dir: &Path, cfg: &deepguard_runtime::ModelConfig) -> Result<(LoraConfig, HashMap<String, Tensor>)> {
    let cp = dir.join(ADAPTER_CONFIG);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).with_context(|| format!("cannot read {}", cp.display()))?)
        .with_context(|| format!("{}: not valid JSON", cp.display()))?;
    let bad = |what: &str| anyhow!("{}: {what}", cp.display());
    if j["peft_type"].as_str() != Some("LORA") {
        return Err(bad("peft_type is not LORA"));
    }
    if j["bias"].as_str().is_some_and(|b| b != "none") {
        return Err(bad("adapters with biases are not supported"));
    }
    let rank = j["r"].as_u64().ok_or_else(|| bad("no `r`"))? as usize;
    let alpha = j["lora_alpha"].as_f64().ok_or_else(|| bad("no `lora_alpha`"))?;
    let targets = match &j["target_modules"] {
        serde_json::Value::Array(v) => v.iter().map(|x| Proj::parse(x.as_str().unwrap_or_default())).collect::<Result<Vec<_>>>().with_context(|| format!("{}", cp.display()))?,
        serde_json::Value::String(s) => s.split(',').map(Proj::parse).collect::<Result<Vec<_>>>().with_context(|| format!("{}", cp.display()))?,
        _ => return Err(bad("no `target_modules`")),
    };
    let layers = match &j["layers_to_transform"] {
        serde_json::Value::Array(v) => v.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect(),
        serde_json::Value::Number(n) => vec![n.as_u64().unwrap_or(0) as usize],
        _ => vec![],
    };
    let lc = LoraConfig { rank, alpha, dropout: j["lora_dropout"].as_f64().unwrap_or(0.0) as f32, targets, layers, seed: 0 };
    lc.validate(cfg.n_layers).with_context(|| format!("{}", cp.display()))?;
    let ap = dir.join(ADAPTER_FILE);
    let t = candle_core::safetensors::load(&ap, &Device::Cpu).with_context(|| format!("cannot read adapters {}", ap.display()))?;
    let mut m = HashMap::new();
    for (k, v) in t {
        // PEFT may save with an adapter name (`.lora_A.default.weight`); ours has none.
        let k = k.replace(".default.weight", ".weight");
        let v = match permuted_heads(cfg, &k) {
            Some(h) => permute_rows(&v, h, false)?,
            None => v,
        };
        m.insert(k, v);
    }
    Ok((lc, m))
}

/// Attaches adapters with settings `l` and weights `w` (PEFT names, decoder row order).
pub fn attach_adapters(model: &mut Model, l: &LoraConfig, w: &HashMap<String, Tensor>) -> Result<()> {
    let params = model.decoder.attach_lora(l)?;
    for (name, var) in params {
        let t = w.get(&name).ok_or_else(|| anyhow!("adapter file lacks `{name}`"))?;
        if t.dims() != var.dims() {
            bail!("adapter `{name}` has shape {:?}, the model expects {:?}", t.dims(), var.dims());
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// Targets of the reference code: q/v for Qwen, q/k/v/o for Llama-family models.
pub fn default_targets(arch: deepguard_runtime::Arch) -> Vec<Proj> {
    match arch {
        deepguard_runtime::Arch::Qwen2 => vec![Proj::QProj, Proj::VProj],
        _ => vec![Proj::QProj, Proj::KProj, Proj::VProj, Proj::OProj],
    }
}
