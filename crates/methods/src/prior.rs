//! DeepGuard's security prior T_stats (one value in [-1, 1] per vocabulary token: positive for
//! tokens that lean towards secure code) and the inference-time logit bias built from it.
//!
//! Two ways to compute T from the training pairs:
//! - `counts` (default): T[v] = (c_sec[v] - c_vul[v]) / (c_sec[v] + c_vul[v] + m), from the token
//!   counts of all secure and all vulnerable functions, with a smoothing count m. It depends only
//!   on the data, not on batch order or batch size, stays inside (-1, 1), and a token seen once
//!   weighs less than one seen a hundred times with the same lean.
//! - `running`: the reference code's rule, applied over the pairs in file order in batches:
//!   T += 0.01 * (occurrences in the secure side - occurrences in the vulnerable side), clamped to
//!   [-1, 1] after every batch. With clamping the result depends on the order of the batches.
//!
//! Bias at decoding (s_prompt = the analyzer's mean score over the prompt):
//! - `paper`: b = (1 - s_prompt) * T, added at every step: the less secure the prompt looks, the
//!   harder decoding is pushed towards secure-leaning tokens.
//! - `reference`: b = (T / max|T|) / s_prompt at every step, plus max(T / max|T|, 0) on the first
//!   two generated tokens (what the authors' code does).

use anyhow::{bail, Result};
use deepguard_runtime::hooks::LogitsProcessor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum PriorRule {
    Counts { smoothing: f64 },
    Running { step: f64, batch: usize },
}

/// The T_stats rules by name, with their settings (`deepguard train --prior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum PriorName {
    /// Order-free: T[v] = (c_sec - c_vul) / (c_sec + c_vul + 5) over the training tokens.
    Counts,
    /// The reference code's: +-0.01 per occurrence, batches of 8, clamped to [-1, 1].
    Running,
}

impl PriorName {
    pub fn rule(self) -> PriorRule {
        match self {
            PriorName::Counts => PriorRule::Counts { smoothing: 5.0 },
            PriorName::Running => PriorRule::Running { step: 0.01, batch: 8 },
        }
    }
}

/// T_stats from token ids of (secure, vulnerable) pairs.
pub fn t_stats(pairs: &[(Vec<u32>, Vec<u32>)], vocab: usize, rule: PriorRule) -> Result<Vec<f32>> {
    let check = |ids: &[u32]| -> Result<()> {
        match ids.iter().find(|&&i| i as usize >= vocab) {
            Some(i) => bail!("token id {i} is outside the vocabulary of {vocab}"),
            None => Ok(()),
        }
    };
    for (s, v) in pairs {
        check(s)?;
        check(v)?;
    }
    match rule {
        PriorRule::Counts { smoothing } => {
            let (mut cs, mut cv) = (vec![0f64; vocab], vec![0f64; vocab]);
            for (s, v) in pairs {
                s.iter().for_each(|&i| cs[i as usize] += 1.0);
                v.iter().for_each(|&i| cv[i as usize] += 1.0);
            }
            Ok(cs.iter().zip(&cv).map(|(s, v)| ((s - v) / (s + v + smoothing)) as f32).collect())
        }
        PriorRule::Running { step, batch } => {
            let mut t = vec![0f64; vocab];
            for chunk in pairs.chunks(batch.max(1)) {
                for (s, v) in chunk {
                    s.iter().for_each(|&i| t[i as usize] += step);
                    v.iter().for_each(|&i| t[i as usize] -= step);
                }
                t.iter_mut().for_each(|x| *x = x.clamp(-1.0, 1.0));
            }
            Ok(t.into_iter().map(|x| x as f32).collect())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum BiasRule {
    Paper,
    Reference,
}

/// The logit bias for a prompt whose sequence score is `s_prompt`, scaled by `strength`.
#[derive(Debug, Clone)]
pub struct PriorBias {
    /// Added at every step.
    pub every: Vec<f32>,
    /// Added on top during the first `early_steps` generated tokens (reference rule).
    pub early: Option<Vec<f32>>,
    pub early_steps: usize,
}

impl PriorBias {
    pub fn new(t: &[f32], s_prompt: f32, rule: BiasRule, strength: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&s_prompt) || s_prompt.is_nan() {
            bail!("prompt score {s_prompt} is not in [0, 1]");
        }
        Ok(match rule {
            BiasRule::Paper => PriorBias { every: t.iter().map(|x| strength * (1.0 - s_prompt) * x).collect(), early: None, early_steps: 0 },
            BiasRule::Reference => {
                let m = t.iter().fold(0f32, |a, x| a.max(x.abs()));
                let norm: Vec<f32> = t.iter().map(|x| if m > 0.0 { x / m } else { 0.0 }).collect();
                let inv = 1.0 / s_prompt.max(1e-6);
                PriorBias {
                    every: norm.iter().map(|x| strength * x * inv).collect(),
                    early: Some(norm.iter().map(|x| strength * x.max(0.0)).collect()),
                    early_steps: 2,
                }
            }
        })
    }
}

impl LogitsProcessor for PriorBias {
    fn process(&mut self, _sample: usize, step: usize, logits: &mut [f32]) -> Result<()> {
        if logits.len() != self.every.len() {
            bail!("the security prior has {} entries but the vocabulary has {}", self.every.len(), logits.len());
        }
        for (l, b) in logits.iter_mut().zip(&self.every) {
            *l += b;
        }
        if let (Some(e), true) = (&self.early, step < self.early_steps) {
            for (l, b) in logits.iter_mut().zip(e) {
                *l += b;
            }
        }
        Ok(())
    }
}
