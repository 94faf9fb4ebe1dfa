//! DeepGuard's multi-layer aggregator: attention over the hidden states of the top N layers.
//!
//! ```text
//! h   = [h_1 .. h_N]              N layers at one token, each (D)
//! q   = W_q · mean_n(h_n)          the query comes from the layers' mean
//! k_n = W_k · h_n,  v_n = W_v · h_n
//! w   = softmax_n(q · k_n / sqrt(D))
//! out = W_o · sum_n w_n v_n        (D), one single-head attention per token
//! ```
//! The N layers follow the reference code's `hidden_states[-N:]`: the outputs of blocks
//! L-N .. L-2 and the final-norm output of the last block. `mean` (plain average of the same N
//! layers) and `last` (the final-norm output alone) are the paper's ablations.

use crate::params::{Dense, Init, Params};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, D};
use deepguard_runtime::decoder::softmax_diff;
use deepguard_runtime::rng::SplitMix;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Attention,
    Mean,
    Last,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Attention => "attention",
            Mode::Mean => "mean",
            Mode::Last => "last",
        }
    }
}

/// One layer the aggregator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LayerRef {
    /// Output of decoder block l (0-based).
    Block(usize),
    /// The final-norm output (input of the output head).
    FinalNorm,
}

/// The layers read for `n` top layers of an `n_layers`-block model, bottom first.
pub fn top_layers(n_layers: usize, n: usize, mode: Mode) -> Result<Vec<LayerRef>> {
    if mode == Mode::Last {
        return Ok(vec![LayerRef::FinalNorm]);
    }
    if n == 0 || n > n_layers {
        bail!("the aggregator needs 1..={n_layers} layers, got {n}");
    }
    let mut v: Vec<LayerRef> = (n_layers - n..n_layers - 1).map(LayerRef::Block).collect();
    v.push(LayerRef::FinalNorm);
    Ok(v)
}

#[derive(Clone)]
pub struct Aggregator {
    pub mode: Mode,
    pub layers: Vec<LayerRef>,
    pub hidden: usize,
    /// W_q, W_k, W_v, W_o (attention mode only).
    pub attn: Option<[Dense; 4]>,
}

impl Aggregator {
    pub fn new(mode: Mode, layers: Vec<LayerRef>, hidden: usize, seed: u64, device: &Device) -> Result<Self> {
        let attn = match mode {
            Mode::Attention => {
                let mk = |k: u64| Dense::new(hidden, hidden, Init::Torch, SplitMix::derive(seed, k), device);
                Some([mk(1)?, mk(2)?, mk(3)?, mk(4)?])
            }
            _ => None,
        };
        Ok(Self { mode, layers, hidden, attn })
    }

    pub fn params(&self) -> Params {
        let mut p = Params::default();
        if let Some(a) = &self.attn {
            for (d, n) in a.iter().zip(["w_q", "w_k", "w_v", "w_o"]) {
                d.register(&mut p, &format!("aggregator.{n}"));
            }
        }
        p
    }

    /// `hs[n]` is layer `self.layers[n]`, each (batch, seq, D); returns (batch, seq, D).
    pub fn forward(&self, hs: &[Tensor]) -> Result<Tensor> {
        if hs.len() != self.layers.len() {
            bail!("aggregator expects {} layers, got {}", self.layers.len(), hs.len());
        }
        let h = Tensor::stack(hs, D::Minus2)?; // (b, t, N, D)
        match (&self.attn, self.mode) {
            (_, Mode::Last) => Ok(hs[hs.len() - 1].clone()),
            (_, Mode::Mean) => Ok(h.mean(D::Minus2)?),
            (Some([wq, wk, wv, wo]), Mode::Attention) => {
                let q = wq.forward(&h.mean_keepdim(D::Minus2)?)?; // (b, t, 1, D)
                let k = wk.forward(&h)?; // (b, t, N, D)
                let v = wv.forward(&h)?;
                let scores = (k.broadcast_mul(&q)?.sum_keepdim(D::Minus1)? / (self.hidden as f64).sqrt())?; // (b, t, N, 1)
                let w = softmax_diff(&scores.transpose(D::Minus2, D::Minus1)?)?; // (b, t, 1, N)
                let mixed = w.matmul(&v)?.squeeze(D::Minus2)?; // (b, t, D)
                wo.forward(&mixed)
            }
            (None, Mode::Attention) => bail!("attention aggregator without weights"),
        }
    }

    /// The attention weights over the layers, (batch, seq, N) (for reports; attention mode).
    pub fn layer_weights(&self, hs: &[Tensor]) -> Result<Option<Tensor>> {
        let Some([wq, wk, _, _]) = &self.attn else { return Ok(None) };
        let h = Tensor::stack(hs, D::Minus2)?;
        let q = wq.forward(&h.mean_keepdim(D::Minus2)?)?;
        let k = wk.forward(&h)?;
        let scores = (k.broadcast_mul(&q)?.sum_keepdim(D::Minus1)? / (self.hidden as f64).sqrt())?;
        Ok(Some(softmax_diff(&scores.transpose(D::Minus2, D::Minus1)?)?.squeeze(D::Minus2)?))
    }
}
