//! A loaded model: decoder + tokenizer + provenance, from a GGUF file or a Hugging Face folder.

use crate::config::{Arch, ModelConfig, RopeStyle};
use crate::decoder::{Block, Decoder, Embedding, Linear, Weight};
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// `gguf` or `safetensors`.
    pub format: String,
    /// Identifies the exact weights (see [`GgufFile::fingerprint`]); artefacts built for one model
    /// record it and refuse another.
    pub fingerprint: String,
    /// Weight types and how many tensors use each.
    pub dtypes: Vec<(String, usize)>,
    pub file_size: u64,
    pub name: Option<String>,
}

pub struct Model {
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
}

impl Model {
    /// Loads a `.gguf` file or a Hugging Face model folder.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if path.is_dir() {
            load_hf_dir(path, device)
        } else if path.exists() {
            load_gguf(path, device)
        } else {
            bail!("model path {} does not exist", path.display())
        }
    }

    pub fn cfg(&self) -> &ModelConfig {
        &self.decoder.cfg
    }
}

fn load_gguf(path: &Path, device: &Device) -> Result<Model> {
    let mut g = GgufFile::open(path)?;
    let cfg = g.config()?;
    let tokenizer = Tokenizer::from_gguf(&g)?;
    if tokenizer.vocab_size > cfg.vocab_size {
        bail!("{}: the tokenizer has {} tokens but the embedding only {} rows", path.display(), tokenizer.vocab_size, cfg.vocab_size);
    }
    let mut qt = |name: &str| -> Result<Arc<candle_core::quantized::QTensor>> { Ok(Arc::new(g.tensor(name, device)?)) };
    let embed_q = qt("token_embd.weight")?;
    let hidden = cfg.hidden_size;
    // Quantized row lookup needs whole blocks per row; otherwise keep the table dense.
    let embed = if hidden % embed_q.dtype().block_size() == 0 {
        Embedding::Quant(embed_q.clone())
    } else {
        Embedding::Dense(embed_q.dequantize(device)?)
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("blk.{l}");
        let mut lin = |w: &str, b: Option<&str>| -> Result<Linear> {
            let weight = Weight::quantized(qt(&format!("{p}.{w}.weight"))?)?;
            let bias = match b {
                Some(b) => Some(qt(&format!("{p}.{b}.bias"))?.dequantize(device)?),
                None => None,
            };
            Linear::new(weight, bias)
        };
        let bias = |n: &'static str| if cfg.qkv_bias { Some(n) } else { None };
        let q = lin("attn_q", bias("attn_q"))?;
        let k = lin("attn_k", bias("attn_k"))?;
        let v = lin("attn_v", bias("attn_v"))?;
        let o = lin("attn_output", None)?;
        let gate = lin("ffn_gate", None)?;
        let up = lin("ffn_up", None)?;
        let down = lin("ffn_down", None)?;
        let attn_norm = qt(&format!("{p}.attn_norm.weight"))?.dequantize(device)?;
        let ffn_norm = qt(&format!("{p}.ffn_norm.weight"))?.dequantize(device)?;
        blocks.push(Block { attn_norm, q, k, v, o, ffn_norm, gate, up, down });
    }
    let norm = qt("output_norm.weight")?.dequantize(device)?;
    let lm_head = if cfg.tie_embeddings {
        Linear::new(Weight::quantized(embed_q)?, None)?
    } else {
        Linear::new(Weight::quantized(qt("output.weight")?)?, None)?
    };
    check_shapes(&cfg, &blocks, path)?;
    let info = ModelInfo {
        path: path.to_path_buf(),
        format: "gguf".into(),
        fingerprint: g.fingerprint(),
        dtypes: g.dtype_histogram(),
        file_size: g.file_size,
        name: g.meta_str("general.name").map(str::to_string),
    };
    let decoder = Decoder::new(cfg, embed, blocks, norm, lm_head, device)?;
    Ok(Model { decoder, tokenizer, info })
}

fn check_shapes(cfg: &ModelConfig, blocks: &[Block], path: &Path) -> Result<()> {
    let b = &blocks[0];
    let expect = [
        ("attn_q", b.q.dims(), (cfg.n_heads * cfg.head_dim, cfg.hidden_size)),
        ("attn_k", b.k.dims(), (cfg.n_kv_heads * cfg.head_dim, cfg.hidden_size)),
        ("attn_v", b.v.dims(), (cfg.n_kv_heads * cfg.head_dim, cfg.hidden_size)),
        ("attn_output", b.o.dims(), (cfg.hidden_size, cfg.n_heads * cfg.head_dim)),
        ("ffn_gate", b.gate.dims(), (cfg.intermediate_size, cfg.hidden_size)),
        ("ffn_down", b.down.dims(), (cfg.hidden_size, cfg.intermediate_size)),
    ];
    for (name, got, want) in expect {
        if got != want {
            bail!("{}: tensor {name} has shape {:?}, the metadata implies {:?}", path.display(), got, want);
        }
    }
    Ok(())
}

fn load_hf_dir(dir: &Path, device: &Device) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let raw: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&cfg_path).with_context(|| format!("{}: not a Hugging Face model folder (no config.json)", dir.display()))?,
    )
    .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?;
    let get = |k: &str| raw.get(k).and_then(|v| v.as_u64()).map(|x| x as usize).ok_or_else(|| anyhow!("{}: `{k}` missing", cfg_path.display()));
    let arch = Arch::parse(raw["model_type"].as_str().unwrap_or("")).with_context(|| cfg_path.display().to_string())?;
    let hidden_size = get("hidden_size")?;
    let n_heads = get("num_attention_heads")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.safetensors files", dir.display());
    }
    let mut w: HashMap<String, Tensor> = HashMap::new();
    for f in &files {
        let ts = candle_core::safetensors::load(f, device).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        w.extend(ts);
    }
    let mut take = |name: &str| -> Result<Tensor> {
        w.remove(name).ok_or_else(|| anyhow!("{}: tensor `{name}` missing", dir.display()))?.to_dtype(DType::F32).map_err(Into::into)
    };
    let tie = raw["tie_word_embeddings"].as_bool().unwrap_or(false);
    let cfg = ModelConfig {
        arch,
        vocab_size: get("vocab_size")?,
        hidden_size,
        intermediate_size: get("intermediate_size")?,
        n_layers: get("num_hidden_layers")?,
        n_heads,
        n_kv_heads: get("num_key_value_heads").unwrap_or(n_heads),
        head_dim: get("head_dim").unwrap_or(hidden_size / n_heads),
        rope_theta: raw["rope_theta"].as_f64().unwrap_or(10_000.0) as f32,
        rope_style: RopeStyle::Neox,
        rms_norm_eps: raw["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        context_length: get("max_position_embeddings").unwrap_or(4096),
        tie_embeddings: tie,
        qkv_bias: arch == Arch::Qwen2,
    };
    cfg.validate()?;
    let embed_w = take("model.embed_tokens.weight")?;
    let mut blocks = Vec::new();
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let mut lin = |name: &str, bias: bool| -> Result<Linear> {
            let b = if bias { Some(take(&format!("{p}.{name}.bias"))?) } else { None };
            Linear::new(Weight::Dense(take(&format!("{p}.{name}.weight"))?), b)
        };
        let qb = cfg.qkv_bias;
        blocks.push(Block {
            q: lin("self_attn.q_proj", qb)?,
            k: lin("self_attn.k_proj", qb)?,
            v: lin("self_attn.v_proj", qb)?,
            o: lin("self_attn.o_proj", false)?,
            gate: lin("mlp.gate_proj", false)?,
            up: lin("mlp.up_proj", false)?,
            down: lin("mlp.down_proj", false)?,
            attn_norm: take(&format!("{p}.input_layernorm.weight"))?,
            ffn_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
        });
    }
    let norm = take("model.norm.weight")?;
    let lm_head = if tie { Linear::new(Weight::Dense(embed_w.clone()), None)? } else { Linear::new(Weight::Dense(take("lm_head.weight")?), None)? };
    check_shapes(&cfg, &blocks, dir)?;
    let eos = raw["eos_token_id"].as_u64().map(|x| x as u32);
    let bos = raw["bos_token_id"].as_u64().map(|x| x as u32);
    let tokenizer = Tokenizer::from_hf_dir(dir, eos, bos)?;
    let mut size = 0;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&cfg)?);
    for f in &files {
        let m = std::fs::metadata(f)?;
        size += m.len();
        h.update(f.file_name().unwrap().to_string_lossy().as_bytes());
        h.update(m.len().to_le_bytes());
    }
    let info = ModelInfo {
        path: dir.to_path_buf(),
        format: "safetensors".into(),
        fingerprint: crate::gguf::hex(&h.finalize()[..16]),
        dtypes: vec![("F32 (from safetensors)".into(), 0)],
        file_size: size,
        name: raw["_name_or_path"].as_str().map(str::to_string),
    };
    let decoder = Decoder::new(cfg, Embedding::Dense(embed_w), blocks, norm, lm_head, device)?;
    Ok(Model { decoder, tokenizer, info })
}
