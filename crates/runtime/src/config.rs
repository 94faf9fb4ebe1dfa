//! Architecture hyper-parameters shared by every loader (GGUF or Hugging Face folder).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The decoder families this runtime implements. Both are pre-norm decoders with RMSNorm,
/// rotary embeddings, grouped-query attention and a SwiGLU MLP; Qwen2 adds q/k/v biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "llama" | "mistral" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            other => bail!("unsupported architecture {} (supported: llama, qwen2)", crate::gguf::show(other)),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// How rotary embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeStyle {
    /// Pairs (i, i + d/2): Hugging Face `rotate_half`, and GGUF qwen2.
    Neox,
    /// Pairs (2i, 2i + 1): GGUF llama (llama.cpp permutes q/k at conversion time).
    Interleaved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rms_norm_eps: f64,
    pub context_length: usize,
    pub tie_embeddings: bool,
    pub qkv_bias: bool,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.n_layers == 0 || self.hidden_size == 0 {
            bail!("config has a zero dimension: {self:?}");
        }
        if self.n_heads % self.n_kv_heads != 0 {
            bail!("n_heads {} is not a multiple of n_kv_heads {}", self.n_heads, self.n_kv_heads);
        }
        if self.head_dim % 2 != 0 {
            bail!("head_dim {} must be even for rotary embeddings", self.head_dim);
        }
        // Bounds far above any real model of this family: a corrupt or hostile file cannot make
        // the loader allocate for them (the rotary table alone is context_length x head_dim).
        let caps = [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 17),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("n_layers", self.n_layers, 1 << 10),
            ("n_heads", self.n_heads, 1 << 10),
            ("n_kv_heads", self.n_kv_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 10),
            ("context_length", self.context_length, 1 << 20),
        ];
        for (name, v, cap) in caps {
            if v > cap {
                bail!("{name} {v} exceeds the supported maximum {cap}");
            }
        }
        if self.context_length == 0 || self.head_dim == 0 || self.vocab_size == 0 || self.intermediate_size == 0 {
            bail!("config has a zero dimension: {self:?}");
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) || !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            bail!("rope_theta {} and rms_norm_eps {} must be finite and positive", self.rope_theta, self.rms_norm_eps);
        }
        Ok(())
    }
}
