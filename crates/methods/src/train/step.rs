//! The training step: one pair through the adapted blocks, the three losses, the gradients.

use super::TrainConfig;
use crate::aggregator::{Aggregator, LayerRef};
use crate::analyzer::{sequence_score, Analyzer};
use crate::features::{Example, Side};
use crate::losses::{head_losses, margin_loss};
use crate::params::Params;
use anyhow::{anyhow, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use deepguard_runtime::rng::SplitMix;
use deepguard_runtime::{ForwardOpts, ForwardOutput, LayerSelect, LogitsSelect, Model};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PairOut {
    pub gen: f64,
    pub kl: f64,
    pub sec: f64,
    pub s_sec: f32,
    pub s_vul: f32,
}

impl PairOut {
    pub fn total(&self, c: &TrainConfig) -> f64 {
        c.w_gen * self.gen + c.w_sec * self.sec + c.w_kl * self.kl
    }
}

/// The model, the trainable heads and the frozen head weight, ready for [`Trainer::pair`].
pub struct Trainer<'a> {
    pub model: &'a Model,
    pub cfg: TrainConfig,
    pub aggregator: Aggregator,
    pub analyzer: Analyzer,
    /// First adapted block.
    pub from: usize,
    /// Output head weight (vocab, hidden), dense.
    pub head_w: Tensor,
    /// Adapters by PEFT name.
    pub adapters: Params,
}

/// Wall-clock time per part of a training step, printed after training when
/// `DEEPGUARD_PROFILE=1` (the same switch as the decoder's profile).
pub(crate) mod step_profile {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    pub const NAMES: [&str; 7] = ["adapted blocks (fwd)", "aggregator+analyzer (fwd)", "head logits (cur+ref)", "head losses", "head gradient matmul", "backward", "grad accumulate+optimizer"];
    static NS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

    pub struct Span(Option<(usize, Instant)>);
    pub fn span(i: usize) -> Span {
        Span(deepguard_runtime::profile::enabled().then(|| (i, Instant::now())))
    }
    impl Drop for Span {
        fn drop(&mut self) {
            if let Some((i, t)) = self.0 {
                NS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        }
    }
    pub fn report(pairs: usize) {
        if !deepguard_runtime::profile::enabled() || pairs == 0 {
            return;
        }
        let total: u64 = NS.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        eprintln!("training step profile over {pairs} pairs ({:.3} s per pair in the parts below):", total as f64 / 1e9 / pairs as f64);
        for (n, a) in NAMES.iter().zip(&NS) {
            let ns = a.load(Ordering::Relaxed) as f64;
            eprintln!("  {n:<28} {:>8.3} s/pair  {:>5.1}%", ns / 1e9 / pairs as f64, 100.0 * ns / total.max(1) as f64);
        }
    }
}

impl<'a> Trainer<'a> {
    /// The aggregator's input layers for one side: cached below the adapters, recomputed (with
    /// adapters and gradients) from the first adapted block up. Also returns the final-norm output
    /// when it was recomputed.
    fn side_states(&self, side: &Side, dropout_seed: Option<u64>) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        let cached = |r: &LayerRef| side.layers.get(r).cloned().ok_or_else(|| anyhow!("feature cache lacks layer {r:?}"));
        if self.cfg.lora.is_none() {
            return Ok((self.aggregator.layers.iter().map(cached).collect::<Result<_>>()?, None));
        }
        let dec = &self.model.decoder;
        let input = if self.from == 0 {
            dec.embed(&Tensor::new(side.ids.as_slice(), dec.device())?.unsqueeze(0)?)?
        } else {
            cached(&LayerRef::Block(self.from - 1))?
        };
        let keep: Vec<usize> = self.aggregator.layers.iter().filter_map(|r| if let LayerRef::Block(b) = r { (*b >= self.from).then_some(*b) } else { None }).collect();
        let opts = ForwardOpts { keep: LayerSelect::Only(keep), keep_final_norm: true, logits: LogitsSelect::None, grad: true, lora: true, dropout_seed, hooks: &[] };
        let mut out = ForwardOutput::default();
        let h = dec.run_blocks(input, self.from..dec.cfg.n_layers, 0, None, &opts, &mut out)?;
        dec.head(&h, &opts, &mut out)?;
        let fin = out.final_norm.take().ok_or_else(|| anyhow!("final norm missing"))?;
        let mut hs = Vec::with_capacity(self.aggregator.layers.len());
        for r in &self.aggregator.layers {
            hs.push(match r {
                LayerRef::Block(b) if *b < self.from => cached(r)?,
                LayerRef::Block(b) => out.hidden.remove(b).ok_or_else(|| anyhow!("block {b} output missing"))?,
                LayerRef::FinalNorm => fin.clone(),
            });
        }
        Ok((hs, Some(fin)))
    }

    /// The sequence score of one side from its aggregator inputs.
    fn side_score(&self, hs: &[Tensor], ids: &[u32], dropout_seed: Option<u64>) -> Result<Tensor> {
        let ids = Tensor::new(ids, self.model.decoder.device())?.unsqueeze(0)?;
        let agg = self.aggregator.forward(hs)?;
        let s = self.analyzer.token_scores(&agg, &ids, dropout_seed)?;
        sequence_score(&s, &s.ones_like()?)
    }

    /// Losses of one pair; with `backward = Some(scale)`, also the gradients of `scale * L`.
    /// `dropout_seed` is Some in training (dropout active, masks drawn from it).
    pub fn pair(&self, ex: &Example, dropout_seed: Option<u64>, backward: Option<f64>) -> Result<(PairOut, Option<GradStore>)> {
        let seed = |k: u64| dropout_seed.map(|s| SplitMix::derive(s, k));
        let c = &self.cfg;
        // Secure side: gradients flow into the adapters and the heads.
        let p = step_profile::span(0);
        let (hs_sec, fin) = self.side_states(&ex.secure, seed(1))?;
        drop(p);
        let p = step_profile::span(1);
        let s_sec = self.side_score(&hs_sec, &ex.secure.ids, seed(2))?;
        drop(p);
        // Vulnerable side: the adapters get no gradient from it, the heads do.
        let p = step_profile::span(0);
        let (hs_vul, _) = self.side_states(&ex.vulnerable, seed(3))?;
        let hs_vul: Vec<Tensor> = hs_vul.iter().map(|t| t.detach()).collect();
        drop(p);
        let p = step_profile::span(1);
        let s_vul = self.side_score(&hs_vul, &ex.vulnerable.ids, seed(4))?;
        drop(p);
        let l_sec = margin_loss(&s_sec, &s_vul, c.margin)?;
        let mut out = PairOut {
            sec: l_sec.to_scalar::<f32>()? as f64,
            s_sec: s_sec.to_vec1::<f32>()?[0],
            s_vul: s_vul.to_vec1::<f32>()?[0],
            ..Default::default()
        };
        let mut objective = (l_sec * c.w_sec)?;
        if let Some(fin) = fin {
            // L_gen and L_kl from the head, with their closed-form gradient (see `losses`).
            let z = fin.squeeze(0)?;
            let p = step_profile::span(2);
            let logits = z.detach().matmul(&self.head_w.t()?)?;
            let reference = ex.secure.layers.get(&LayerRef::FinalNorm).ok_or_else(|| anyhow!("feature cache lacks the reference final norm"))?;
            let ref_logits = reference.squeeze(0)?.matmul(&self.head_w.t()?)?;
            drop(p);
            let p = step_profile::span(3);
            let (hl, g_logits) = head_losses(&logits, &ref_logits, &ex.secure.ids, c.w_gen, c.w_kl, c.kl_clamp)?;
            drop(p);
            out.gen = hl.gen;
            out.kl = hl.kl;
            if backward.is_some() {
                let _p = step_profile::span(4);
                let g_z = g_logits.matmul(&self.head_w)?;
                objective = (objective + (z * g_z)?.sum_all()?)?;
            }
        }
        let grads = match backward {
            Some(scale) => {
                let _p = step_profile::span(5);
                Some((objective * scale)?.backward()?)
            }
            None => None,
        };
        Ok((out, grads))
    }
}
