//! LoRA adapters (Hu et al. 2021) on named projections of chosen layers.
//!
//! `y = W x + (alpha / r) * B (A dropout(x))`, A: r x in (Kaiming-uniform init), B: out x r (zeros),
//! so an untrained adapter leaves the model unchanged. Parameter names follow Hugging Face PEFT
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`) so adapters load there.

use anyhow::{bail, Result};
use crate::rng::SplitMix;
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
    /// Seeds the initialisation of the A matrices.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_seed() -> u64 {
    42
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
    pub fn applies_to(&self, layer: usize) -> bool {
        self.layers.is_empty() || self.layers.contains(&layer)
    }

    /// Checks the settings for a model of `n_layers` blocks before anything is allocated for
    /// them (a rank read from a file sizes every adapter matrix).
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        if self.rank == 0 || self.rank > 4096 {
            bail!("LoRA rank {} is outside 1..=4096", self.rank);
        }
        if !self.alpha.is_finite() || !self.dropout.is_finite() || !(0.0..1.0).contains(&self.dropout) {
            bail!("LoRA alpha {} / dropout {} must be finite (dropout in [0, 1))", self.alpha, self.dropout);
        }
        if self.targets.is_empty() {
            bail!("LoRA has no target projections");
        }
        if let Some(&bad) = self.layers.iter().find(|&&l| l >= n_layers) {
            bail!("LoRA layer {bad} does not exist (model has {n_layers} layers)");
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
    /// Distinguishes this adapter's dropout stream from the others' in one forward pass.
    pub id: u64,
}

impl Lora {
    /// A fresh adapter; `id` seeds its initialisation (with `cfg.seed`) and its dropout masks.
    pub fn new(in_dim: usize, out_dim: usize, cfg: &LoraConfig, id: u64, device: &Device) -> Result<Self> {
        // PEFT's default: kaiming_uniform(a=sqrt(5)) on A, i.e. U(-1/sqrt(in), 1/sqrt(in)).
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a = crate::rng::uniform(SplitMix::derive(cfg.seed, id), -bound, bound, &[cfg.rank, in_dim], device)?;
        let a = Var::from_tensor(&a)?;
        let b = Var::from_tensor(&Tensor::zeros((out_dim, cfg.rank), DType::F32, device)?)?;
        Ok(Self { a, b, scale: cfg.scale(), dropout: cfg.dropout, id })
    }

    /// The low-rank update for input `x` (..., in) -> (..., out). `dropout_seed` is `Some` in
    /// training: the mask is drawn from it (and this adapter's id), so runs are reproducible.
    pub fn delta(&self, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let x = match dropout_seed {
            Some(s) if self.dropout > 0.0 => crate::rng::dropout(x, self.dropout, SplitMix::derive(s, self.id))?,
            _ => x.clone(),
        };
        let h = x.broadcast_matmul(&self.a.as_tensor().t()?)?;
        Ok((h.broadcast_matmul(&self.b.as_tensor().t()?)? * self.scale)?)
    }
}
