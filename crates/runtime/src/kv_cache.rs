//! Pre-allocated key/value cache: one (batch, kv_heads, capacity, head_dim) buffer per layer,
//! written in place; attention reads a view of the filled part.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, capacity: usize) -> Self {
        Self { layers: vec![None; n_layers], len: 0, capacity }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch(&self) -> Option<usize> {
        self.layers.iter().flatten().next().and_then(|(k, _)| k.dim(0).ok())
    }

    /// Appends `k`, `v` (batch, kv_heads, t, head_dim) for `layer` at position `self.len()` and
    /// returns views of everything cached so far for that layer.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, t, d) = k.dims4()?;
        if self.len + t > self.capacity {
            bail!("KV cache overflow: {} cached + {t} new > capacity {}", self.len, self.capacity);
        }
        let slot = &mut self.layers[layer];
        if slot.is_none() {
            let kk = Tensor::zeros((b, h, self.capacity, d), k.dtype(), k.device())?;
            let vv = Tensor::zeros((b, h, self.capacity, d), v.dtype(), v.device())?;
            *slot = Some((kk, vv));
        }
        let (kc, vc) = slot.as_ref().unwrap();
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((kc.narrow(2, 0, self.len + t)?, vc.narrow(2, 0, self.len + t)?))
    }

    /// Marks `t` more positions as filled; called once per forward pass, after every layer appended.
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Repeats a batch-1 cache `n` times (n samples of one prompt share the prompt's prefill).
    pub fn expand_batch(&mut self, n: usize) -> Result<()> {
        for slot in self.layers.iter_mut().flatten() {
            let (k, v) = slot.clone();
            if k.dim(0)? != 1 {
                bail!("expand_batch needs a batch-1 cache");
            }
            let grow = |x: &Tensor| -> Result<Tensor> { Ok(x.repeat((n, 1, 1, 1))?.contiguous()?) };
            *slot = (grow(&k)?, grow(&v)?);
        }
        Ok(())
    }

    /// Keeps only the batch rows in `rows` (finished samples leave the batch).
    pub fn retain_rows(&mut self, rows: &[usize], device: &Device) -> Result<()> {
        let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), device)?;
        for slot in self.layers.iter_mut().flatten() {
            let (k, v) = slot.clone();
            *slot = (k.index_select(&idx, 0)?.contiguous()?, v.index_select(&idx, 0)?.contiguous()?);
        }
        Ok(())
    }
}
