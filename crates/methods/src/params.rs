//! Named trainable parameters and the small differentiable layers DeepGuard's heads are built
//! from. Everything is composed of candle primitives that have a backward pass (no fused ops).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var, D};
use deepguard_runtime::rng::{self, SplitMix};
use std::collections::BTreeMap;

/// Parameters by name, in a stable order (checkpoints and optimizer state follow it).
#[derive(Default, Clone)]
pub struct Params {
    pub vars: BTreeMap<String, Var>,
}

impl Params {
    pub fn insert(&mut self, name: impl Into<String>, v: Var) -> Var {
        self.vars.insert(name.into(), v.clone());
        v
    }

    pub fn extend(&mut self, prefix: &str, other: &Params) {
        for (k, v) in &other.vars {
            self.vars.insert(format!("{prefix}{k}"), v.clone());
        }
    }

    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Current values, for saving.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }

    /// Sets every parameter from `t` (all must be present with the right shapes).
    pub fn load(&self, t: &std::collections::HashMap<String, Tensor>, what: &str) -> Result<()> {
        for (k, v) in &self.vars {
            let Some(x) = t.get(k) else { bail!("{what}: tensor `{k}` is missing") };
            if x.dims() != v.dims() {
                bail!("{what}: tensor `{k}` has shape {:?}, expected {:?}", x.dims(), v.dims());
            }
            v.set(&x.to_dtype(v.dtype())?)?;
        }
        Ok(())
    }
}

/// y = x W^T + b.
#[derive(Clone)]
pub struct Dense {
    pub w: Var,
    pub b: Var,
}

pub enum Init {
    /// PyTorch's nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    Torch,
    /// Xavier-uniform weight, zero bias.
    Xavier,
}

impl Dense {
    pub fn new(input: usize, output: usize, init: Init, seed: u64, device: &Device) -> Result<Self> {
        let (w, b) = match init {
            Init::Torch => {
                let k = 1.0 / (input as f64).sqrt();
                (rng::uniform(seed, -k, k, &[output, input], device)?, rng::uniform(SplitMix::derive(seed, 1), -k, k, &[output], device)?)
            }
            Init::Xavier => {
                let a = (6.0 / (input + output) as f64).sqrt();
                (rng::uniform(seed, -a, a, &[output, input], device)?, Tensor::zeros(output, candle_core::DType::F32, device)?)
            }
        };
        Ok(Self { w: Var::from_tensor(&w)?, b: Var::from_tensor(&b)? })
    }

    /// `x` (..., input) -> (..., output). The leading dimensions are flattened into one matrix
    /// product: a batched `broadcast_matmul` over (batch, seq, layers, D) would broadcast W to
    /// every (batch, seq) and give its backward a (seq x D x D) gradient to sum (411 MB per
    /// projection for 128 tokens at D = 896).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let input = *dims.last().ok_or_else(|| anyhow::anyhow!("Dense::forward on a scalar"))?;
        let rows = x.elem_count() / input.max(1);
        let y = x.reshape((rows, input))?.matmul(&self.w.as_tensor().t()?)?.broadcast_add(self.b.as_tensor())?;
        *dims.last_mut().unwrap() = self.w.as_tensor().dim(0)?;
        Ok(y.reshape(dims)?)
    }

    pub fn register(&self, p: &mut Params, name: &str) {
        p.insert(format!("{name}.weight"), self.w.clone());
        p.insert(format!("{name}.bias"), self.b.clone());
    }
}

/// LayerNorm over the last dimension (eps 1e-5, learned gain and bias), from primitives.
#[derive(Clone)]
pub struct LayerNorm {
    pub g: Var,
    pub b: Var,
}

impl LayerNorm {
    pub fn new(dim: usize, device: &Device) -> Result<Self> {
        Ok(Self { g: Var::ones(dim, candle_core::DType::F32, device)?, b: Var::zeros(dim, candle_core::DType::F32, device)? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mu = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mu)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        Ok(y.broadcast_mul(self.g.as_tensor())?.broadcast_add(self.b.as_tensor())?)
    }

    pub fn register(&self, p: &mut Params, name: &str) {
        p.insert(format!("{name}.weight"), self.g.clone());
        p.insert(format!("{name}.bias"), self.b.clone());
    }
}
