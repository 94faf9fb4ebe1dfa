//! LoRA adapters (Hu et al. 2021) on named projections of chosen layers.
//!
//! `y = W x + (alpha / r) * B (A dropout(x))`, A: r x in (Kaiming-uniform init), B: out x r (zeros),
//! so an untrained adapter leaves the model unchanged. Parameter names follow Hugging Face PEFT
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`) so adapters load there.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

/// The projections of a decoder block, by their Hugging Face names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Proj {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl Proj {
    pub const ALL: [Proj; 7] = [Proj::QProj, Proj::KProj, Proj::VProj, Proj::OProj, Proj::GateProj, Proj::UpProj, Proj::DownProj];

    pub fn hf_name(self) -> &'static str {
        match self {
            Proj::QProj => "q_proj",
            Proj::KProj => "k_proj",
            Proj::VProj => "v_proj",
            Proj::OProj => "o_proj",
            Proj::GateProj => "gate_proj",
            Proj::UpProj => "up_proj",
            Proj::DownProj => "down_proj",
        }
    }

    /// `self_attn` or `mlp`, the module that holds the projection in HF checkpoints.
    pub fn hf_module(self) -> &'static str {
        match self {
            Proj::QProj | Proj::KProj | Proj::VProj | Proj::OProj => "self_attn",
            _ => "mlp",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        for p in Proj::ALL {
            if s == p.hf_name() || s == &p.hf_name()[..1] || s == p.hf_name().trim_end_matches("_proj") {
                return Ok(p);
            }
        }
        bail!("unknown projection `{s}` (expected one of q,k,v,o,gate,up,down or their *_proj names)")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub targets: Vec<Proj>,
    /// Layers that get adapters; empty means all layers.
    pub layers: Vec<usize>,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
    pub fn applies_to(&self, layer: usize) -> bool {
        self.layers.is_empty() || self.layers.contains(&layer)
    }
}

#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
}

impl Lora {
    pub fn new(in_dim: usize, out_dim: usize, cfg: &LoraConfig, device: &Device) -> Result<Self> {
        // PEFT's default: kaiming_uniform(a=sqrt(5)) on A, i.e. U(-1/sqrt(in), 1/sqrt(in)).
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a = Var::from_tensor(&Tensor::rand(-bound as f32, bound as f32, (cfg.rank, in_dim), device)?)?;
        let b = Var::from_tensor(&Tensor::zeros((out_dim, cfg.rank), DType::F32, device)?)?;
        Ok(Self { a, b, scale: cfg.scale(), dropout: cfg.dropout })
    }

    /// The low-rank update for input `x` (..., in) -> (..., out).
    pub fn delta(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = if train && self.dropout > 0.0 { candle_nn::ops::dropout(x, self.dropout)? } else { x.clone() };
        let h = x.broadcast_matmul(&self.a.as_tensor().t()?)?;
        Ok((h.broadcast_matmul(&self.b.as_tensor().t()?)? * self.scale)?)
    }
}
