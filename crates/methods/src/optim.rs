//! AdamW (decoupled weight decay, Loshchilov & Hutter) over named parameters, with gradient
//! accumulation, global-norm clipping and a linear warm-up / linear decay schedule. Its state
//! is plain tensors, so checkpoints can store and restore it exactly.

use crate::params::Params;
use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdamWConfig {
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { weight_decay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// A parameter group: parameters sharing a base learning rate.
pub struct Group {
    pub params: Params,
    pub lr: f64,
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    pub groups: Vec<Group>,
    /// Steps taken.
    pub step: usize,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
    /// Gradients summed since the last step.
    pub acc: BTreeMap<String, Tensor>,
}

/// Linear warm-up over `warmup` steps (the first step already gets lr / warmup), then linear
/// decay to 0 at `total`.
pub fn lr_factor(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else if total <= warmup {
        1.0
    } else {
        ((total - step) as f64 / (total - warmup) as f64).max(0.0)
    }
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, groups: Vec<Group>) -> Self {
        Self { cfg, groups, step: 0, m: BTreeMap::new(), v: BTreeMap::new(), acc: BTreeMap::new() }
    }

    fn all(&self) -> impl Iterator<Item = (&String, &candle_core::Var, f64)> {
        self.groups.iter().flat_map(|g| g.params.vars.iter().map(move |(k, v)| (k, v, g.lr)))
    }

    /// Adds the gradients of one backward pass.
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<()> {
        let names: Vec<(String, candle_core::Var)> = self.all().map(|(k, v, _)| (k.clone(), v.clone())).collect();
        for (k, var) in names {
            if let Some(g) = grads.get(var.as_tensor()) {
                // Gradients can carry candle's op graph (a product with a Var records it); the
                // accumulator and the moments must not, or every step would keep the last one's
                // graph alive.
                let g = g.detach();
                let sum = match self.acc.remove(&k) {
                    Some(a) => (a + g)?,
                    None => g,
                };
                self.acc.insert(k, sum);
            }
        }
        Ok(())
    }

    /// Global L2 norm of the accumulated gradients.
    pub fn grad_norm(&self) -> Result<f64> {
        let mut s = 0f64;
        for g in self.acc.values() {
            s += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(s.sqrt())
    }

    /// Clips the accumulated gradients to global norm `clip`, updates every parameter with
    /// learning rate `group lr * factor`, clears the accumulator. Returns the norm before
    /// clipping.
    pub fn step(&mut self, factor: f64, clip: f64) -> Result<f64> {
        let norm = self.grad_norm()?;
        if !norm.is_finite() {
            bail!("gradient norm is {norm}: training diverged (lower the learning rate)");
        }
        let scale = if clip > 0.0 && norm > clip { clip / (norm + 1e-6) } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let AdamWConfig { weight_decay, beta1, beta2, eps } = self.cfg;
        let (bc1, bc2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        let items: Vec<(String, candle_core::Var, f64)> = self.all().map(|(k, v, lr)| (k.clone(), v.clone(), lr)).collect();
        for (k, var, lr) in items {
            let Some(g) = self.acc.remove(&k) else { continue };
            let g = (g * scale)?;
            let m = match self.m.remove(&k) {
                Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                None => (&g * (1.0 - beta1))?,
            };
            let v = match self.v.remove(&k) {
                Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                None => (g.sqr()? * (1.0 - beta2))?,
            };
            let lr = lr * factor;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + eps)?)?;
            let theta = var.as_tensor();
            let new = ((theta * (1.0 - lr * weight_decay))? - (update * lr)?)?.detach();
            var.set(&new)?;
            self.m.insert(k.clone(), m);
            self.v.insert(k, v);
        }
        self.acc.clear();
        Ok(norm)
    }

    /// State tensors for a checkpoint: `m.{name}`, `v.{name}`.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut s = HashMap::new();
        for (k, t) in &self.m {
            s.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            s.insert(format!("v.{k}"), t.clone());
        }
        s
    }

    pub fn load_state(&mut self, t: &HashMap<String, Tensor>, step: usize) {
        self.step = step;
        self.m.clear();
        self.v.clear();
        for (k, x) in t {
            if let Some(n) = k.strip_prefix("m.") {
                self.m.insert(n.to_string(), x.clone());
            } else if let Some(n) = k.strip_prefix("v.") {
                self.v.insert(n.to_string(), x.clone());
            }
        }
    }
}
