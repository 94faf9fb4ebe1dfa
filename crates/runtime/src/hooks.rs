//! Hooks into a running decoder: residual-stream edits after a block (steering) and logits
//! processors at every decoding step (guided decoding). Both are empty slices when unused,
//! so the plain forward pass pays nothing for them.

use anyhow::{bail, Result};
use candle_core::{Tensor, D};

/// Edits the residual stream after decoder block `layer`.
pub trait ResidualHook: Send + Sync {
    /// `h` is the block output, shape (batch, seq, hidden), covering absolute positions
    /// `pos .. pos + seq`. Returns the (possibly) edited tensor.
    fn apply(&self, layer: usize, h: Tensor, pos: usize) -> Result<Tensor>;
}

/// Adds `alpha * v` to the residual stream after block `layer` at every absolute position
/// `>= from_pos` (and `< to_pos` if given), leaving all other positions untouched. With
/// `from_pos = prompt_len - 1` this is the Surgical Repair rule: the last prompt token during
/// prefill and every generated token after it.
#[derive(Debug, Clone)]
pub struct AddVector {
    pub layer: usize,
    /// Pre-scaled: `alpha * v`, shape (hidden,).
    pub delta: Tensor,
    pub from_pos: usize,
    pub to_pos: Option<usize>,
}

impl AddVector {
    pub fn new(layer: usize, v: &Tensor, alpha: f64, from_pos: usize) -> Result<Self> {
        if v.rank() != 1 {
            bail!("steering vector must be 1-D, got shape {:?}", v.dims());
        }
        Ok(Self { layer, delta: (v.to_dtype(candle_core::DType::F32)? * alpha)?, from_pos, to_pos: None })
    }
}

impl ResidualHook for AddVector {
    fn apply(&self, layer: usize, h: Tensor, pos: usize) -> Result<Tensor> {
        if layer != self.layer {
            return Ok(h);
        }
        let (_, t, d) = h.dims3()?;
        if d != self.delta.dim(0)? {
            bail!("steering vector has dimension {} but the model's hidden size is {d}", self.delta.dim(0)?);
        }
        let end = pos + t;
        let lo = self.from_pos.max(pos);
        let hi = self.to_pos.unwrap_or(usize::MAX).min(end);
        if lo >= hi {
            return Ok(h);
        }
        if lo == pos && hi == end {
            return Ok(h.broadcast_add(&self.delta)?);
        }
        // Split the sequence into before / edited / after and add only to the middle.
        let (a, b) = (lo - pos, hi - pos);
        let mut parts = Vec::with_capacity(3);
        if a > 0 {
            parts.push(h.narrow(1, 0, a)?);
        }
        parts.push(h.narrow(1, a, b - a)?.broadcast_add(&self.delta)?);
        if b < t {
            parts.push(h.narrow(1, b, t - b)?);
        }
        Ok(Tensor::cat(&parts, D::Minus2)?)
    }
}

/// Edits next-token logits (one row per live sample) before sampling.
pub trait LogitsProcessor: Send {
    /// `sample` is the sample's index in the request, `step` the number of tokens it has
    /// generated so far, `logits` its row over the vocabulary.
    fn process(&mut self, sample: usize, step: usize, logits: &mut [f32]) -> Result<()>;
}

/// Adds a fixed bias vector to the logits at every step (DeepGuard's inference-time guidance).
pub struct AddBias {
    pub bias: Vec<f32>,
}

impl LogitsProcessor for AddBias {
    fn process(&mut self, _sample: usize, _step: usize, logits: &mut [f32]) -> Result<()> {
        if logits.len() != self.bias.len() {
            bail!("logit bias has {} entries but the vocabulary has {}", self.bias.len(), logits.len());
        }
        for (l, b) in logits.iter_mut().zip(&self.bias) {
            *l += b;
        }
        Ok(())
    }
}
