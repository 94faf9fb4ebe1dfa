//! The decoder: one implementation of the Llama / Qwen2 transformer for inference and training.
//!
//! ```text
//! h_0 = embed(ids)
//! for each block l:   h = h + attn(rms_norm(h)) ;  h = h + mlp(rms_norm(h)) ;  h = hooks(l, h)
//! logits = lm_head(rms_norm(h))
//! ```
//! Inference uses candle's fused kernels (rms_norm, softmax, rope) and quantized matmuls.
//! Those kernels have no backward pass, so `ForwardOpts::grad` switches every one of them to a
//! composition of differentiable primitives; weights that gradients must cross are dequantized
//! once by [`Decoder::prepare_for_training`]. Same code path, same weights, same numbers.

use crate::config::{ModelConfig, RopeStyle};
use crate::hooks::ResidualHook;
use crate::kernels::attention::{causal_attention, AttnShape, KvView};
use crate::kernels::{vmath, with_cpu_f32, QMatrix};
use crate::kv_cache::KvCache;
use crate::lora::{Lora, LoraConfig, Proj};
use crate::profile::{span, Stage};
use anyhow::{bail, Result};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, Var, D};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A weight matrix (out, in): quantized (our kernels, or candle's for types we have no kernel
/// for) for inference, or dense f32.
#[derive(Debug, Clone)]
pub enum Weight {
    Kernel(QMatrix),
    Candle(Arc<QTensor>, QMatMul),
    Dense(Tensor),
}

impl Weight {
    pub fn quantized(q: Arc<QTensor>) -> Result<Self> {
        Ok(match QMatrix::from_qtensor_for(&q, crate::kernels::Isa::detect())? {
            Some(m) => Weight::Kernel(m),
            None => Weight::Candle(q.clone(), QMatMul::from_arc(q)?),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

impl Linear {
    pub fn new(weight: Weight, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self { weight, bias, lora: None })
    }

    /// (out, in)
    pub fn dims(&self) -> (usize, usize) {
        match &self.weight {
            Weight::Kernel(m) => (m.rows, m.cols),
            Weight::Candle(q, _) => (q.shape().dims()[0], q.shape().dims()[1]),
            Weight::Dense(t) => (t.dims()[0], t.dims()[1]),
        }
    }

    pub fn forward(&self, x: &Tensor, opts: &ForwardOpts) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Kernel(m) => m.forward(x)?,
            Weight::Candle(_, q) => q.forward(x)?,
            // The frozen base weight gets no gradient (adapters carry the trainable part).
            Weight::Dense(w) => crate::frozen::frozen_matmul(x, w)?,
        };
        self.finish(x, y, opts)
    }

    /// Several projections of the same input (q/k/v, gate/up). With our kernels the input is
    /// copied and quantized once and all outputs come from one pass over the thread pool.
    pub fn forward_many(lins: &[&Linear], x: &Tensor, opts: &ForwardOpts) -> Result<Vec<Tensor>> {
        let mats: Option<Vec<&QMatrix>> = lins.iter().map(|l| if let Weight::Kernel(m) = &l.weight { Some(m) } else { None }).collect();
        let Some(mats) = mats else { return lins.iter().map(|l| l.forward(x, opts)).collect() };
        let ys = crate::kernels::forward_many(&mats, x)?;
        lins.iter().zip(ys).map(|(l, y)| l.finish(x, y, opts)).collect()
    }

    /// Bias and adapter on the base projection `y` of `x`.
    fn finish(&self, x: &Tensor, y: Tensor, opts: &ForwardOpts) -> Result<Tensor> {
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        match &self.lora {
            Some(l) if opts.lora => Ok((y + l.delta(x, opts.dropout_seed)?)?),
            _ => Ok(y),
        }
    }

    /// Replaces a quantized weight by its dense f32 form (so gradients can flow through it).
    pub fn densify(&mut self) -> Result<()> {
        if !matches!(self.weight, Weight::Dense(_)) {
            self.weight = Weight::Dense(self.dense_weight()?);
        }
        Ok(())
    }

    pub fn dense_weight(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Weight::Kernel(m) => m.dequantize()?,
            Weight::Candle(q, _) => q.dequantize(&q.device())?,
            Weight::Dense(t) => t.clone(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Block {
    pub fn proj_mut(&mut self, p: Proj) -> &mut Linear {
        match p {
            Proj::QProj => &mut self.q,
            Proj::KProj => &mut self.k,
            Proj::VProj => &mut self.v,
            Proj::OProj => &mut self.o,
            Proj::GateProj => &mut self.gate,
            Proj::UpProj => &mut self.up,
            Proj::DownProj => &mut self.down,
        }
    }
    pub fn proj(&self, p: Proj) -> &Linear {
        match p {
            Proj::QProj => &self.q,
            Proj::KProj => &self.k,
            Proj::VProj => &self.v,
            Proj::OProj => &self.o,
            Proj::GateProj => &self.gate,
            Proj::UpProj => &self.up,
            Proj::DownProj => &self.down,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Embedding {
    Quant(Arc<QTensor>),
    Dense(Tensor),
}

/// Which block outputs a forward pass keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LayerSelect {
    #[default]
    None,
    All,
    Only(Vec<usize>),
}

impl LayerSelect {
    pub fn keeps(&self, layer: usize) -> bool {
        match self {
            LayerSelect::None => false,
            LayerSelect::All => true,
            LayerSelect::Only(v) => v.contains(&layer),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogitsSelect {
    None,
    /// Only the last position (generation).
    #[default]
    Last,
    All,
}

#[derive(Clone, Default)]
pub struct ForwardOpts<'a> {
    /// Block outputs to return (index l = output of block l, after hooks).
    pub keep: LayerSelect,
    /// Also return the final-norm output (all positions).
    pub keep_final_norm: bool,
    pub logits: LogitsSelect,
    pub hooks: &'a [&'a dyn ResidualHook],
    /// Use differentiable ops everywhere (training).
    pub grad: bool,
    /// Apply LoRA adapters (false gives the frozen reference model from the same weights).
    pub lora: bool,
    /// Training mode: dropout in adapters is active, with masks drawn from this seed (vary it
    /// per step; the same seed gives the same masks).
    pub dropout_seed: Option<u64>,
}

impl<'a> ForwardOpts<'a> {
    pub fn inference() -> Self {
        Self { lora: true, ..Default::default() }
    }
}

#[derive(Debug, Default)]
pub struct ForwardOutput {
    /// (batch, vocab) for `Last`, (batch, seq, vocab) for `All`.
    pub logits: Option<Tensor>,
    /// Block outputs (batch, seq, hidden) by layer index.
    pub hidden: BTreeMap<usize, Tensor>,
    /// Final-norm output (batch, seq, hidden).
    pub final_norm: Option<Tensor>,
}

pub struct Decoder {
    pub cfg: ModelConfig,
    pub embed: Embedding,
    pub blocks: Vec<Block>,
    pub norm: Tensor,
    pub lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl Decoder {
    pub fn new(cfg: ModelConfig, embed: Embedding, blocks: Vec<Block>, norm: Tensor, lm_head: Linear, device: &Device) -> Result<Self> {
        if blocks.len() != cfg.n_layers {
            bail!("config says {} layers but {} blocks were loaded", cfg.n_layers, blocks.len());
        }
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.head_dim as f32)).collect();
        let inv = Tensor::new(inv, device)?.reshape((1, half))?;
        let pos = Tensor::arange(0u32, cfg.context_length as u32, device)?.to_dtype(DType::F32)?.reshape((cfg.context_length, 1))?;
        let freqs = pos.matmul(&inv)?;
        Ok(Self { cos: freqs.cos()?, sin: freqs.sin()?, cfg, embed, blocks, norm, lm_head, device: device.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Full forward pass over `ids` (batch, seq) at absolute position `pos`.
    pub fn forward(&self, ids: &Tensor, pos: usize, mut cache: Option<&mut KvCache>, opts: &ForwardOpts) -> Result<ForwardOutput> {
        let (_, t) = ids.dims2()?;
        if pos + t > self.cfg.context_length {
            bail!("sequence of {} positions exceeds the model's context length {}", pos + t, self.cfg.context_length);
        }
        let mut out = ForwardOutput::default();
        let h = self.embed(ids)?;
        let h = self.run_blocks(h, 0..self.cfg.n_layers, pos, cache.as_deref_mut(), opts, &mut out)?;
        if let Some(c) = cache {
            c.advance(t);
        }
        self.head(&h, opts, &mut out)?;
        Ok(out)
    }

    /// One forward pass over a ragged batch: segment `s` holds `rows` sequences of `t` new
    /// tokens each at its own position (`cache.len()`), with its own cache, residual hooks and
    /// adapter switch. `ids` lists every segment's tokens in order (row-major within a segment).
    /// Returns each segment's logits at the last position of its rows, (rows, vocab), where it
    /// asks for them.
    ///
    /// The projections and the MLP run once over all tokens; rope, the cache and attention run
    /// per segment. Every operation treats a token (or a row) on its own, so a segment's
    /// results equal those of [`forward`](Self::forward) on that segment alone: this is how
    /// the server decodes requests at different positions together (continuous batching).
    pub fn forward_ragged(&self, ids: &[u32], segs: &mut [Segment]) -> Result<Vec<Option<Tensor>>> {
        let total: usize = segs.iter().map(|s| s.rows * s.t).sum();
        if ids.len() != total || total == 0 {
            bail!("{} token ids for segments holding {total} tokens", ids.len());
        }
        for s in segs.iter() {
            let pos = s.cache.len();
            if s.rows == 0 || s.t == 0 {
                bail!("empty segment ({} rows of {} tokens)", s.rows, s.t);
            }
            if pos + s.t > self.cfg.context_length {
                bail!("sequence of {} positions exceeds the model's context length {}", pos + s.t, self.cfg.context_length);
            }
            if s.cache.batch().is_some_and(|b| b != s.rows) {
                bail!("segment of {} rows on a cache of {:?} rows", s.rows, s.cache.batch());
            }
        }
        let mut spans = Vec::with_capacity(segs.len());
        let mut off = 0;
        for s in segs.iter() {
            spans.push(Span { off, rows: s.rows, t: s.t, pos: s.cache.len(), lora: s.lora });
            off += s.rows * s.t;
        }
        let opts = ForwardOpts { lora: false, ..Default::default() };
        let x = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let mut h = self.embed(&x)?;
        let masks: Vec<Option<Tensor>> = spans.iter().map(|sp| if sp.t > 1 { causal_mask(sp.t, sp.pos, &self.device).map(Some) } else { Ok(None) }).collect::<Result<_>>()?;
        let hooked = segs.iter().any(|s| !s.hooks.is_empty());
        for l in 0..self.cfg.n_layers {
            h = self.block(l, &h, &mut Ragged { spans: &spans, masks: &masks, segs: &mut *segs }, &opts)?;
            if hooked {
                let _p = span(Stage::Residual);
                let mut parts = Vec::with_capacity(segs.len());
                for (s, sp) in segs.iter().zip(&spans) {
                    let mut part = h.narrow(1, sp.off, sp.rows * sp.t)?;
                    if !s.hooks.is_empty() {
                        part = part.reshape((sp.rows, sp.t, ()))?;
                        for hook in s.hooks {
                            part = hook.apply(l, part, sp.pos)?;
                        }
                        part = part.reshape((1, sp.rows * sp.t, ()))?;
                    }
                    parts.push(part);
                }
                h = Tensor::cat(&parts, 1)?;
            }
        }
        for (s, sp) in segs.iter_mut().zip(&spans) {
            s.cache.advance(sp.t);
        }
        // Output head on the last position of every row that asks for logits.
        let _p = span(Stage::Head);
        let mut last = Vec::new();
        for (s, sp) in segs.iter().zip(&spans) {
            if s.logits {
                last.push(h.narrow(1, sp.off, sp.rows * sp.t)?.reshape((sp.rows, sp.t, ()))?.narrow(1, sp.t - 1, 1)?);
            }
        }
        let mut out = Vec::with_capacity(segs.len());
        if last.is_empty() {
            out.resize(segs.len(), None);
            return Ok(out);
        }
        let last = Tensor::cat(&last, 0)?;
        let logits = self.lm_head.forward(&self.rms_norm(&last, &self.norm, false)?, &opts)?.squeeze(1)?;
        let mut row = 0;
        for (s, sp) in segs.iter().zip(&spans) {
            if s.logits {
                out.push(Some(logits.narrow(0, row, sp.rows)?));
                row += sp.rows;
            } else {
                out.push(None);
            }
        }
        Ok(out)
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let _p = span(Stage::Embed);
        Ok(match &self.embed {
            Embedding::Quant(q) => q.embedding(ids)?,
            Embedding::Dense(w) => {
                let (b, t) = ids.dims2()?;
                w.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden_size))?
            }
        })
    }

    /// Runs blocks `layers` on the residual stream `h` (batch, seq, hidden). Training code uses
    /// this to run frozen lower blocks once and cache their output.
    pub fn run_blocks(
        &self,
        mut h: Tensor,
        layers: std::ops::Range<usize>,
        pos: usize,
        cache: Option<&mut KvCache>,
        opts: &ForwardOpts,
        out: &mut ForwardOutput,
    ) -> Result<Tensor> {
        let t = h.dim(1)?;
        let mask = if t > 1 { Some(causal_mask(t, pos, &self.device)?) } else { None };
        let mut rows = Batched { pos, mask: mask.as_ref(), cache };
        for l in layers {
            h = self.block(l, &h, &mut rows, opts)?;
            let _p = span(Stage::Residual);
            for hook in opts.hooks {
                h = hook.apply(l, h, pos)?;
            }
            if opts.keep.keeps(l) {
                out.hidden.insert(l, h.clone());
            }
        }
        Ok(h)
    }

    /// Final norm and output head on the last block's output.
    pub fn head(&self, h: &Tensor, opts: &ForwardOpts, out: &mut ForwardOutput) -> Result<()> {
        let _p = span(Stage::Head);
        let t = h.dim(1)?;
        let normed = match opts.logits {
            LogitsSelect::Last if !opts.keep_final_norm => self.rms_norm(&h.narrow(1, t - 1, 1)?, &self.norm, opts.grad)?,
            _ => self.rms_norm(h, &self.norm, opts.grad)?,
        };
        match opts.logits {
            LogitsSelect::None => {}
            LogitsSelect::Last => {
                // `normed` is already the last position unless the full final norm was kept.
                let last = if opts.keep_final_norm { normed.narrow(1, t - 1, 1)? } else { normed.clone() };
                out.logits = Some(self.lm_head.forward(&last, opts)?.squeeze(1)?);
            }
            LogitsSelect::All => out.logits = Some(self.lm_head.forward(&normed, opts)?),
        }
        if opts.keep_final_norm {
            out.final_norm = Some(normed);
        }
        Ok(())
    }

    /// One transformer block on the residual stream `x`, for the batched and the ragged paths
    /// alike (`rows` says how the tokens are laid out: which projections, which attention):
    ///
    /// ```text
    /// h   = x + o(attention(rope(q), rope(k), v))     q, k, v: projections of rms_norm(x)
    /// out = h + down(silu(gate) * up)                 gate, up: projections of rms_norm(h)
    /// ```
    fn block(&self, l: usize, x: &Tensor, rows: &mut dyn Rows, opts: &ForwardOpts) -> Result<Tensor> {
        let blk = &self.blocks[l];
        let hn = {
            let _p = span(Stage::Norm);
            self.rms_norm(x, &blk.attn_norm, opts.grad)?
        };
        let qkv = {
            let _p = span(Stage::Qkv);
            rows.project(&[&blk.q, &blk.k, &blk.v], &hn, opts)?
        };
        let y = rows.attend(self, l, &qkv[0], &qkv[1], &qkv[2], opts)?;
        let o = {
            let _p = span(Stage::OProj);
            rows.project(&[&blk.o], &y, opts)?.remove(0)
        };
        let h = {
            let _p = span(Stage::Residual);
            (x + o)?
        };
        let hn = {
            let _p = span(Stage::Norm);
            self.rms_norm(&h, &blk.ffn_norm, opts.grad)?
        };
        let gu = {
            let _p = span(Stage::GateUp);
            rows.project(&[&blk.gate, &blk.up], &hn, opts)?
        };
        let act = {
            let _p = span(Stage::Act);
            swiglu(&gu[0], &gu[1], opts.grad)?
        };
        let down = {
            let _p = span(Stage::Down);
            rows.project(&[&blk.down], &act, opts)?.remove(0)
        };
        let _p = span(Stage::Residual);
        Ok((h + down)?)
    }

    /// Rope, the KV cache and attention of block `l` for `rows` sequences of `t` tokens at
    /// position `pos`: `q`, `k`, `v` are projections (rows, t, heads * head_dim); the output is
    /// (rows, t, n_heads * head_dim).
    #[allow(clippy::too_many_arguments)]
    fn attend(&self, l: usize, q: &Tensor, k: &Tensor, v: &Tensor, pos: usize, mask: Option<&Tensor>, cache: Option<&mut KvCache>, opts: &ForwardOpts) -> Result<Tensor> {
        let (nh, nkv, hd) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim);
        let (b, t, _) = q.dims3()?;
        let (q, k, v) = {
            let _p = span(Stage::Rope);
            let heads = |x: &Tensor, n: usize| -> Result<Tensor> { Ok(x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?) };
            let q = self.rope(&heads(q, nh)?, pos, opts.grad)?;
            let k = self.rope(&heads(k, nkv)?, pos, opts.grad)?;
            let v = heads(v, nkv)?;
            let (k, v) = match cache {
                Some(c) => c.append(l, &k, &v)?,
                None => (k, v),
            };
            (q, k, v)
        };
        let _p = span(Stage::Attn);
        let shape = AttnShape { batch: b, n_heads: nh, n_kv_heads: nkv, head_dim: hd, t, pos };
        let fast = if opts.grad { None } else { fast_attention(&q, &k, &v, shape)? };
        match fast {
            Some(y) => Ok(y),
            None => self.attention_ops(&q, &k, &v, mask, shape, opts),
        }
    }

    /// Attention from candle ops: differentiable (training) and device-independent.
    fn attention_ops(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, s: AttnShape, opts: &ForwardOpts) -> Result<Tensor> {
        let AttnShape { batch: b, n_heads: nh, n_kv_heads: nkv, head_dim: hd, t, .. } = s;
        let kv_len = k.dim(2)?;
        // Grouped-query attention without copying K/V: fold the query heads that share a KV
        // head into the row dimension, (b, nkv, group * t, hd).
        let g = nh / nkv;
        let q = q.reshape((b, nkv, g * t, hd))?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let att = match mask {
            Some(m) => att.reshape((b, nkv, g, t, kv_len))?.broadcast_add(m)?.reshape((b, nkv, g * t, kv_len))?,
            None => att,
        };
        let att = if opts.grad { softmax_diff(&att)? } else { candle_nn::ops::softmax_last_dim(&att)? };
        Ok(att.matmul(&v)?.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b, t, nh * hd))?)
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor, grad: bool) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps;
        if grad {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)?)
        } else {
            Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
        }
    }

    /// Rotary embedding on (b, heads, t, hd) at absolute positions pos..pos+t.
    fn rope(&self, x: &Tensor, pos: usize, grad: bool) -> Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        if !grad {
            return Ok(match self.cfg.rope_style {
                RopeStyle::Neox => candle_nn::rotary_emb::rope(x, &cos, &sin)?,
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, &cos, &sin)?,
            });
        }
        let half = d / 2;
        match self.cfg.rope_style {
            RopeStyle::Neox => {
                let x1 = x.narrow(D::Minus1, 0, half)?;
                let x2 = x.narrow(D::Minus1, half, half)?;
                let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
                Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
            }
            RopeStyle::Interleaved => {
                let xp = x.reshape((b, h, t, half, 2))?;
                let x1 = xp.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
                let x2 = xp.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
                let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                let r2 = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
                Ok(Tensor::stack(&[r1, r2], D::Minus1)?.reshape((b, h, t, d))?)
            }
        }
    }

    /// Attaches fresh LoRA adapters and returns them by their PEFT parameter names.
    pub fn attach_lora(&mut self, cfg: &LoraConfig) -> Result<Vec<(String, Var)>> {
        cfg.validate(self.cfg.n_layers)?;
        let mut params = Vec::new();
        let device = self.device.clone();
        for (l, blk) in self.blocks.iter_mut().enumerate() {
            if !cfg.applies_to(l) {
                continue;
            }
            for &p in &cfg.targets {
                let lin = blk.proj_mut(p);
                let (out_dim, in_dim) = lin.dims();
                let id = (l * Proj::ALL.len() + p as usize) as u64;
                let lora = Lora::new(in_dim, out_dim, cfg, id, &device)?;
                let base = format!("base_model.model.model.layers.{l}.{}.{}", p.hf_module(), p.hf_name());
                params.push((format!("{base}.lora_A.weight"), lora.a.clone()));
                params.push((format!("{base}.lora_B.weight"), lora.b.clone()));
                lin.lora = Some(lora);
            }
        }
        Ok(params)
    }

    /// Removes all adapters.
    pub fn detach_lora(&mut self) {
        for blk in &mut self.blocks {
            for p in Proj::ALL {
                blk.proj_mut(p).lora = None;
            }
        }
    }

    /// Dequantizes the weights of blocks `from_layer..` and the output head, the part of the
    /// network that gradients cross when adapters sit at or above `from_layer`. Quantized
    /// matmuls have no backward pass: without this, gradients would silently stop.
    pub fn prepare_for_training(&mut self, from_layer: usize) -> Result<()> {
        for blk in self.blocks.iter_mut().skip(from_layer) {
            for p in Proj::ALL {
                blk.proj_mut(p).densify()?;
            }
        }
        self.lm_head.densify()
    }
}

/// One request's part of a ragged batch ([`Decoder::forward_ragged`]): `rows` sequences of
/// `t` new tokens each, continuing `cache` (which holds `rows` rows, or nothing yet) at
/// position `cache.len()`.
pub struct Segment<'a> {
    pub cache: &'a mut KvCache,
    pub rows: usize,
    pub t: usize,
    /// Residual hooks for these rows only (positions are this segment's own).
    pub hooks: &'a [&'a dyn ResidualHook],
    /// Apply the model's LoRA adapters to these rows.
    pub lora: bool,
    /// Return logits for the last position of each row.
    pub logits: bool,
}

/// Where a segment's tokens sit in the flattened batch.
struct Span {
    off: usize,
    rows: usize,
    t: usize,
    pos: usize,
    lora: bool,
}

/// How a block's tokens are laid out: the one thing in which a batch of equal sequences
/// ([`Decoder::forward`]) and a ragged batch ([`Decoder::forward_ragged`]) differ.
trait Rows {
    /// The projections `lins` of `x`, each in `x`'s layout.
    fn project(&self, lins: &[&Linear], x: &Tensor, opts: &ForwardOpts) -> Result<Vec<Tensor>>;
    /// Block `l`'s attention output from its q, k, v projections, in the projections' layout.
    fn attend(&mut self, dec: &Decoder, l: usize, q: &Tensor, k: &Tensor, v: &Tensor, opts: &ForwardOpts) -> Result<Tensor>;
}

/// Sequences of equal length `t` at position `pos`, (batch, t, hidden), one cache for all.
struct Batched<'a> {
    pos: usize,
    mask: Option<&'a Tensor>,
    cache: Option<&'a mut KvCache>,
}

impl Rows for Batched<'_> {
    fn project(&self, lins: &[&Linear], x: &Tensor, opts: &ForwardOpts) -> Result<Vec<Tensor>> {
        match lins {
            [one] => Ok(vec![one.forward(x, opts)?]),
            _ => Linear::forward_many(lins, x, opts),
        }
    }

    fn attend(&mut self, dec: &Decoder, l: usize, q: &Tensor, k: &Tensor, v: &Tensor, opts: &ForwardOpts) -> Result<Tensor> {
        dec.attend(l, q, k, v, self.pos, self.mask, self.cache.as_deref_mut(), opts)
    }
}

/// A ragged batch (1, tokens, hidden): segment `s` holds the tokens of `spans[s]`, with its own
/// position, cache and causal mask (`masks[s]`, none for single tokens).
struct Ragged<'a, 's> {
    spans: &'a [Span],
    masks: &'a [Option<Tensor>],
    segs: &'a mut [Segment<'s>],
}

impl Rows for Ragged<'_, '_> {
    fn project(&self, lins: &[&Linear], x: &Tensor, opts: &ForwardOpts) -> Result<Vec<Tensor>> {
        ragged_project(lins, x, self.spans, opts)
    }

    fn attend(&mut self, dec: &Decoder, l: usize, q: &Tensor, k: &Tensor, v: &Tensor, opts: &ForwardOpts) -> Result<Tensor> {
        let mut ys = Vec::with_capacity(self.spans.len());
        for ((sp, seg), mask) in self.spans.iter().zip(self.segs.iter_mut()).zip(self.masks) {
            let n = sp.rows * sp.t;
            let part = |x: &Tensor| -> Result<Tensor> { Ok(x.narrow(1, sp.off, n)?.reshape((sp.rows, sp.t, ()))?) };
            let y = dec.attend(l, &part(q)?, &part(k)?, &part(v)?, sp.pos, mask.as_ref(), Some(&mut *seg.cache), opts)?;
            ys.push(y.reshape((1, n, ()))?);
        }
        Ok(if ys.len() == 1 { ys.pop().unwrap() } else { Tensor::cat(&ys, 1)? })
    }
}

/// SwiGLU's product silu(gate) * up: our kernel on CPU f32, differentiable ops when training.
fn swiglu(gate: &Tensor, up: &Tensor, grad: bool) -> Result<Tensor> {
    if grad {
        return Ok(((gate * candle_nn::ops::sigmoid(gate)?)? * up)?);
    }
    Ok(match with_cpu_f32(&[gate, up], |s| vmath::silu_mul(s[0], s[1]))? {
        Some(y) => Tensor::from_vec(y, gate.shape(), gate.device())?,
        None => (gate.silu()? * up)?,
    })
}

/// Projections of a ragged batch `x` (1, tokens, in): the base weights over every token at
/// once, adapters only on the segments that ask for them (each computed on the segment's own
/// (rows, t, in) slice, as a forward pass of that segment alone would).
fn ragged_project(lins: &[&Linear], x: &Tensor, spans: &[Span], opts: &ForwardOpts) -> Result<Vec<Tensor>> {
    let ys = Linear::forward_many(lins, x, opts)?;
    if !spans.iter().any(|s| s.lora) || lins.iter().all(|l| l.lora.is_none()) {
        return Ok(ys);
    }
    lins.iter()
        .zip(ys)
        .map(|(lin, y)| {
            let Some(lora) = &lin.lora else { return Ok(y) };
            let mut parts = Vec::with_capacity(spans.len());
            for sp in spans {
                let n = sp.rows * sp.t;
                let part = y.narrow(1, sp.off, n)?;
                parts.push(if sp.lora {
                    let xs = x.narrow(1, sp.off, n)?.reshape((sp.rows, sp.t, ()))?;
                    let ys = part.reshape((sp.rows, sp.t, ()))?;
                    (ys + lora.delta(&xs, None)?)?.reshape((1, n, ()))?
                } else {
                    part
                });
            }
            Ok(Tensor::cat(&parts, 1)?)
        })
        .collect()
}

/// Additive causal mask (t, pos + t): position i may attend to j <= pos + i.
fn causal_mask(t: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let kv = pos + t;
    let m: Vec<f32> = (0..t).flat_map(|i| (0..kv).map(move |j| if j <= pos + i { 0.0 } else { f32::NEG_INFINITY })).collect();
    Ok(Tensor::from_vec(m, (t, kv), device)?)
}

/// Softmax over the last dimension from differentiable primitives. The max shift is a constant
/// (its gradient cancels), so it is detached.
pub fn softmax_diff(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Our attention kernel on CPU f32 tensors: `q` (b, nh, t, hd) contiguous, `k`/`v` (b, nkv,
/// kv_len, hd) with contiguous rows (views of the KV cache are). `None` where it does not apply.
fn fast_attention(q: &Tensor, k: &Tensor, v: &Tensor, s: AttnShape) -> Result<Option<Tensor>> {
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (candle_core::Storage::Cpu(qc), candle_core::Storage::Cpu(kc), candle_core::Storage::Cpu(vc)) = (&*qs, &*ks, &*vs) else { return Ok(None) };
    if q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 || !ql.is_contiguous() || k.dim(2)? != s.pos + s.t {
        return Ok(None);
    }
    fn view<'a>(c: &'a candle_core::CpuStorage, l: &candle_core::Layout, hd: usize) -> Result<Option<KvView<'a>>> {
        let st = l.stride();
        if st[3] != 1 || st[2] != hd {
            return Ok(None);
        }
        Ok(Some(KvView { data: &c.as_slice::<f32>()?[l.start_offset()..], batch_stride: st[0], head_stride: st[1] }))
    }
    let (Some(kv), Some(vv)) = (view(kc, kl, s.head_dim)?, view(vc, vl, s.head_dim)?) else { return Ok(None) };
    let qv = &qc.as_slice::<f32>()?[ql.start_offset()..ql.start_offset() + q.elem_count()];
    let y = causal_attention(qv, kv, vv, s);
    Ok(Some(Tensor::from_vec(y, (s.batch, s.t, s.n_heads * s.head_dim), q.device())?))
}
