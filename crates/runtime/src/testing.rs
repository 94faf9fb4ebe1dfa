//! Tiny random models written to real files, for tests here and in the other crates.
//!
//! [`TinySpec::write_gguf`] writes a complete GGUF (architecture metadata, byte-level BPE
//! tokenizer with special tokens and a chat template, quantized weights);
//! [`TinySpec::write_hf`] writes the same weights as a Hugging Face folder.

use crate::config::Arch;
use anyhow::Result;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct TinySpec {
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context: usize,
    pub tie: bool,
    /// Type of the matrices (norms and biases stay F32).
    pub dtype: GgmlDType,
    pub seed: u64,
}

impl TinySpec {
    pub fn llama() -> Self {
        Self { arch: Arch::Llama, hidden: 64, intermediate: 128, layers: 3, heads: 4, kv_heads: 2, context: 256, tie: false, dtype: GgmlDType::Q8_0, seed: 1 }
    }
    pub fn qwen2() -> Self {
        Self { arch: Arch::Qwen2, tie: true, seed: 2, ..Self::llama() }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// The model's weights in Hugging Face naming, deterministic in `seed`. For llama, q/k are in
    /// HF (rotate-half) order; [`write_gguf`](Self::write_gguf) permutes them as llama.cpp does.
    pub fn weights(&self) -> Result<BTreeMap<String, Tensor>> {
        let dev = Device::Cpu;
        let mut rng = Lcg(self.seed);
        let mut w = BTreeMap::new();
        let mut mat = |name: String, rows: usize, cols: usize, scale: f32| -> Result<()> {
            let v: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * scale).collect();
            w.insert(name, Tensor::from_vec(v, (rows, cols), &dev)?);
            Ok(())
        };
        let (d, hd, v) = (self.hidden, self.head_dim(), vocab().len());
        mat("model.embed_tokens.weight".into(), v, d, 0.5)?;
        if !self.tie {
            mat("lm_head.weight".into(), v, d, 0.2)?;
        }
        let s = 1.0 / (d as f32).sqrt();
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            mat(format!("{p}.self_attn.q_proj.weight"), self.heads * hd, d, s)?;
            mat(format!("{p}.self_attn.k_proj.weight"), self.kv_heads * hd, d, s)?;
            mat(format!("{p}.self_attn.v_proj.weight"), self.kv_heads * hd, d, s)?;
            mat(format!("{p}.self_attn.o_proj.weight"), d, self.heads * hd, s)?;
            mat(format!("{p}.mlp.gate_proj.weight"), self.intermediate, d, s)?;
            mat(format!("{p}.mlp.up_proj.weight"), self.intermediate, d, s)?;
            mat(format!("{p}.mlp.down_proj.weight"), d, self.intermediate, 1.0 / (self.intermediate as f32).sqrt())?;
            if self.arch == Arch::Qwen2 {
                mat(format!("{p}.self_attn.q_proj.bias"), 1, self.heads * hd, 0.1)?;
                mat(format!("{p}.self_attn.k_proj.bias"), 1, self.kv_heads * hd, 0.1)?;
                mat(format!("{p}.self_attn.v_proj.bias"), 1, self.kv_heads * hd, 0.1)?;
            }
            mat(format!("{p}.input_layernorm.weight"), 1, d, 0.1)?;
            mat(format!("{p}.post_attention_layernorm.weight"), 1, d, 0.1)?;
        }
        mat("model.norm.weight".into(), 1, d, 0.1)?;
        // Biases and norms are vectors; norms centred on 1.
        let mut out = BTreeMap::new();
        for (k, t) in w {
            let t = if t.dim(0)? == 1 { t.squeeze(0)? } else { t };
            let t = if k.ends_with("norm.weight") { (t + 1.0)? } else { t };
            out.insert(k, t);
        }
        Ok(out)
    }

    pub fn write_gguf(&self, path: &Path) -> Result<()> {
        let w = self.weights()?;
        let arch = self.arch.name();
        let hd = self.head_dim();
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        let q = |t: &Tensor, dt: GgmlDType| QTensor::quantize(t, dt);
        let permute = |t: &Tensor, heads: usize| -> Result<Tensor> {
            // llama.cpp's convert: HF rotate-half order -> interleaved pairs.
            let (rows, cols) = t.dims2()?;
            Ok(t.reshape((heads, 2, hd / 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))?)
        };
        tensors.push(("token_embd.weight".into(), q(&w["model.embed_tokens.weight"], self.dtype)?));
        if !self.tie {
            tensors.push(("output.weight".into(), q(&w["lm_head.weight"], self.dtype)?));
        }
        tensors.push(("output_norm.weight".into(), q(&w["model.norm.weight"], GgmlDType::F32)?));
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            let b = format!("blk.{l}");
            let mut m = |gg: &str, hf: &str, heads: Option<usize>| -> Result<()> {
                let t = &w[&format!("{p}.{hf}.weight")];
                let t = match (heads, self.arch) {
                    (Some(h), Arch::Llama) => permute(t, h)?,
                    _ => t.clone(),
                };
                tensors.push((format!("{b}.{gg}.weight"), q(&t, self.dtype)?));
                Ok(())
            };
            m("attn_q", "self_attn.q_proj", Some(self.heads))?;
            m("attn_k", "self_attn.k_proj", Some(self.kv_heads))?;
            m("attn_v", "self_attn.v_proj", None)?;
            m("attn_output", "self_attn.o_proj", None)?;
            m("ffn_gate", "mlp.gate_proj", None)?;
            m("ffn_up", "mlp.up_proj", None)?;
            m("ffn_down", "mlp.down_proj", None)?;
            if self.arch == Arch::Qwen2 {
                for (gg, hf) in [("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj")] {
                    tensors.push((format!("{b}.{gg}.bias"), q(&w[&format!("{p}.self_attn.{hf}.bias")], GgmlDType::F32)?));
                }
            }
            tensors.push((format!("{b}.attn_norm.weight"), q(&w[&format!("{p}.input_layernorm.weight")], GgmlDType::F32)?));
            tensors.push((format!("{b}.ffn_norm.weight"), q(&w[&format!("{p}.post_attention_layernorm.weight")], GgmlDType::F32)?));
        }
        let (tokens, types, merges) = tokenizer_parts();
        let k = |s: &str| format!("{arch}.{s}");
        let u = |x: usize| Value::U32(x as u32);
        let mut md: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            ("general.name".into(), Value::String(format!("tiny-{arch}"))),
            (k("block_count"), u(self.layers)),
            (k("context_length"), u(self.context)),
            (k("embedding_length"), u(self.hidden)),
            (k("feed_forward_length"), u(self.intermediate)),
            (k("attention.head_count"), u(self.heads)),
            (k("attention.head_count_kv"), u(self.kv_heads)),
            (k("rope.dimension_count"), u(hd)),
            (k("rope.freq_base"), Value::F32(10000.0)),
            (k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String(if self.arch == Arch::Qwen2 { "qwen2" } else { "smollm" }.into())),
            ("tokenizer.ggml.tokens".into(), Value::Array(tokens.into_iter().map(Value::String).collect())),
            ("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(|t| Value::I32(t as i32)).collect())),
            ("tokenizer.ggml.merges".into(), Value::Array(merges.into_iter().map(Value::String).collect())),
            ("tokenizer.ggml.bos_token_id".into(), u(vocab_id("<|im_start|>"))),
            ("tokenizer.ggml.eos_token_id".into(), u(vocab_id("<|endoftext|>"))),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
            ("tokenizer.chat_template".into(), Value::String(TINY_CHAT_TEMPLATE.into())),
        ];
        if self.arch == Arch::Llama {
            md.push((k("vocab_size"), u(vocab().len())));
        }
        let mut f = std::fs::File::create(path)?;
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(a, b)| (a.as_str(), b)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(a, b)| (a.as_str(), b)).collect();
        gguf_file::write(&mut f, &md_refs, &t_refs)?;
        Ok(())
    }

    /// Writes config.json, model.safetensors (f32), tokenizer.json and tokenizer_config.json.
    pub fn write_hf(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let w = self.weights()?;
        let cfg = serde_json::json!({
            "model_type": self.arch.name(), "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.context, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": self.tie, "vocab_size": vocab().len(),
            "eos_token_id": vocab_id("<|endoftext|>"), "bos_token_id": vocab_id("<|im_start|>"),
        });
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
        candle_core::safetensors::save(&w.into_iter().collect(), dir.join("model.safetensors"))?;
        let (tokens, types, merges) = tokenizer_parts();
        let pre = if self.arch == Arch::Qwen2 { "qwen2" } else { "smollm" };
        let doc = crate::tokenizer::bpe_tokenizer_json(&tokens, &types, &merges, pre)?;
        std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&doc)?)?;
        let tc = serde_json::json!({"eos_token": "<|endoftext|>", "bos_token": null, "chat_template": TINY_CHAT_TEMPLATE});
        std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_vec(&tc)?)?;
        Ok(())
    }
}

pub const TINY_CHAT_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// GPT-2's reversible byte -> printable character map.
pub fn byte_to_char() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        map[*b as usize] = char::from_u32(c).unwrap();
    }
    map
}

/// Merges of the tiny vocabulary: a few code fragments.
const MERGE_WORDS: &[&str] = &["def", "return", "self", "import", "Ġx", "in", "ĠĠ", "ĠĠĠĠ"];

/// (tokens, token types, merges): 256 byte tokens, merged tokens, then the special tokens.
pub fn tokenizer_parts() -> (Vec<String>, Vec<u64>, Vec<String>) {
    let mut tokens: Vec<String> = byte_to_char().into_iter().map(|c| c.to_string()).collect();
    let mut merges = Vec::new();
    for w in MERGE_WORDS {
        let chars: Vec<char> = w.chars().collect();
        let mut cur = chars[0].to_string();
        for c in &chars[1..] {
            let next = format!("{cur}{c}");
            if !tokens.contains(&next) {
                merges.push(format!("{cur} {c}"));
                tokens.push(next.clone());
            }
            cur = next;
        }
    }
    let mut types = vec![1u64; tokens.len()];
    for s in SPECIAL_TOKENS {
        tokens.push(s.to_string());
        types.push(3);
    }
    (tokens, types, merges)
}

pub fn vocab() -> Vec<String> {
    tokenizer_parts().0
}

pub fn vocab_id(tok: &str) -> usize {
    vocab().iter().position(|t| t == tok).expect("token in tiny vocab")
}

/// Deterministic normal variates (no dependence on a RNG crate's stream stability).
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}
