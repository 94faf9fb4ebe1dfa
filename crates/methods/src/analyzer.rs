//! DeepGuard's security analyzer f_sa: a score in (0, 1) for every token, from the aggregated
//! hidden state and a learned token security embedding.
//!
//! ```text
//! x_i = [agg_i ; E_sec[token_i]]                     (D + 128)
//! s_i = sigmoid(W4 relu(W3 drop(relu(LN(W2 drop(relu(LN(W1 x_i)))))))
//!        W1: D+128 -> 512, W2: 512 -> 256, W3: 256 -> 128, W4: 128 -> 1
//! S   = sum_i m_i s_i / sum_i m_i                    sequence score over real tokens only
//! ```
//! A high score means "looks secure": training pushes S(fixed) above S(vulnerable) by a margin.

use crate::params::{Dense, Init, LayerNorm, Params};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use deepguard_runtime::rng::{self, SplitMix};

pub const EMBED_DIM: usize = 128;
pub const DROPOUT: f32 = 0.1;

#[derive(Clone)]
pub struct Analyzer {
    /// E_sec: (vocab, 128), N(0, 0.02).
    pub embed: Var,
    pub l1: Dense,
    pub n1: LayerNorm,
    pub l2: Dense,
    pub n2: LayerNorm,
    pub l3: Dense,
    pub l4: Dense,
    pub dropout: f32,
}

impl Analyzer {
    pub fn new(hidden: usize, vocab: usize, seed: u64, device: &Device) -> Result<Self> {
        let s = |k| SplitMix::derive(seed, k);
        Ok(Self {
            embed: Var::from_tensor(&rng::normal(s(10), 0.02, &[vocab, EMBED_DIM], device)?)?,
            l1: Dense::new(hidden + EMBED_DIM, 512, Init::Xavier, s(11), device)?,
            n1: LayerNorm::new(512, device)?,
            l2: Dense::new(512, 256, Init::Xavier, s(12), device)?,
            n2: LayerNorm::new(256, device)?,
            l3: Dense::new(256, 128, Init::Xavier, s(13), device)?,
            l4: Dense::new(128, 1, Init::Xavier, s(14), device)?,
            dropout: DROPOUT,
        })
    }

    pub fn params(&self) -> Params {
        let mut p = Params::default();
        p.insert("analyzer.embed_sec.weight", self.embed.clone());
        self.l1.register(&mut p, "analyzer.mlp.0");
        self.n1.register(&mut p, "analyzer.mlp.1");
        self.l2.register(&mut p, "analyzer.mlp.4");
        self.n2.register(&mut p, "analyzer.mlp.5");
        self.l3.register(&mut p, "analyzer.mlp.8");
        self.l4.register(&mut p, "analyzer.mlp.10");
        p
    }

    pub fn vocab(&self) -> usize {
        self.embed.dims()[0]
    }

    /// Per-token scores (batch, seq) in (0, 1) for aggregated states `agg` (batch, seq, D) of
    /// tokens `ids` (batch, seq). `dropout_seed`: Some in training.
    pub fn token_scores(&self, agg: &Tensor, ids: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if let Some(&bad) = ids.flatten_all()?.to_vec1::<u32>()?.iter().find(|&&i| i as usize >= self.vocab()) {
            bail!("token id {bad} is outside the analyzer's vocabulary of {}", self.vocab());
        }
        let e = self.embed.as_tensor().index_select(&ids.flatten_all()?, 0)?.reshape((b, t, EMBED_DIM))?;
        let x = Tensor::cat(&[agg, &e], D::Minus1)?;
        let drop = |x: Tensor, k: u64| -> Result<Tensor> {
            match dropout_seed {
                Some(s) => rng::dropout(&x, self.dropout, SplitMix::derive(s, k)),
                None => Ok(x),
            }
        };
        let x = drop(self.n1.forward(&self.l1.forward(&x)?)?.relu()?, 1)?;
        let x = drop(self.n2.forward(&self.l2.forward(&x)?)?.relu()?, 2)?;
        let x = self.l3.forward(&x)?.relu()?;
        let s = candle_nn::ops::sigmoid(&self.l4.forward(&x)?)?;
        Ok(s.squeeze(D::Minus1)?)
    }
}

/// Masked mean over the sequence: scores (batch, seq), mask (batch, seq) of 0/1 → (batch,).
/// Pads (mask 0) never count; a row without real tokens is an error.
pub fn sequence_score(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?;
    let n = mask.sum(D::Minus1)?;
    if n.to_vec1::<f32>()?.iter().any(|&c| c <= 0.0) {
        bail!("a sequence has no real tokens (all positions are padding)");
    }
    Ok((scores * &mask)?.sum(D::Minus1)?.div(&n)?)
}
