//! The layer x alpha sweep: vectors built at each layer from training activations, added to
//! validation windows under teacher forcing, scored by security gain and fluency cost.

use super::build::mean_difference;
use crate::data::{window_pair, Cwe, Pair, WindowSpec};
use crate::probe::{Activations, Pooling};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use deepguard_runtime::{ForwardOpts, ForwardOutput, LayerSelect, LogitsSelect, Model};
use serde::Serialize;

/// One cell of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepCell {
    pub layer: usize,
    pub alpha: f64,
    /// Steered minus unsteered change of [mean log p(changed tokens | secure side) - mean log
    /// p(changed tokens | vulnerable side)], nats per token: how much more the model prefers the
    /// secure code over the vulnerable code at the lines that differ.
    pub security_gain: f64,
    /// Unsteered minus steered mean log p of the unchanged tokens (nats per token): damage to
    /// ordinary code.
    pub fluency_cost: f64,
    pub n_pairs: usize,
}

/// Mean log-probabilities of the changed and the unchanged tokens of `ids` given `logits`
/// (t, vocab), teacher-forced.
fn changed_unchanged_logprob(logits: &Tensor, ids: &[u32], changed: &std::ops::Range<usize>) -> Result<(f64, f64)> {
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let (mut c, mut nc, mut u, mut nu) = (0.0, 0, 0.0, 0);
    for i in 1..ids.len() {
        let r = &rows[i - 1];
        let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + r.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let lp = r[ids[i] as usize] as f64 - lse;
        if changed.contains(&i) {
            c += lp;
            nc += 1;
        } else {
            u += lp;
            nu += 1;
        }
    }
    Ok((c / nc.max(1) as f64, u / nu.max(1) as f64))
}

/// Tries every layer x alpha on validation pairs: vectors for each layer are built from the
/// training activations (per CWE; pairs of a CWE without training pairs are skipped), added at
/// every position of the validation windows (teacher forcing: the whole window is "generated"
/// code), and scored by [`SweepCell`]'s security gain and fluency cost. Lower blocks run once
/// per side; only blocks above the steered one are re-run per cell.
pub fn sweep(
    model: &Model,
    train: &Activations,
    pooling: Pooling,
    val: &[Pair],
    spec: &WindowSpec,
    layers: &[usize],
    alphas: &[f64],
    mut on_pair: impl FnMut(usize),
) -> Result<Vec<SweepCell>> {
    let n_layers = model.cfg().n_layers;
    for &l in layers {
        if l >= n_layers {
            bail!("layer {l} does not exist (the model has {n_layers} blocks)");
        }
    }
    // vectors[layer index][cwe]
    let mut vecs: Vec<std::collections::HashMap<Cwe, Tensor>> = Vec::new();
    for &l in layers {
        let x = train.layer(pooling, l);
        let mut m = std::collections::HashMap::new();
        let mut cwes = train.cwes.clone();
        cwes.sort();
        cwes.dedup();
        for c in cwes {
            let idx: Vec<usize> = (0..train.n_pairs()).filter(|&i| train.cwes[i] == c).collect();
            m.insert(c, Tensor::from_vec(mean_difference(&x, &idx).0, train.hidden, &Device::Cpu)?);
        }
        vecs.push(m);
    }
    let dev = model.decoder.device();
    let mut gain = vec![0.0; layers.len() * alphas.len()];
    let mut cost = vec![0.0; layers.len() * alphas.len()];
    let mut n = 0;
    for (pi, p) in val.iter().enumerate() {
        on_pair(pi);
        if !vecs[0].contains_key(&p.cwe) {
            continue;
        }
        let (wv, wf) = window_pair(&model.tokenizer, p, spec)?;
        // [side][cell] = (changed, unchanged)
        let mut base = Vec::new();
        let mut steered = Vec::new();
        for w in [&wv, &wf] {
            let ids = Tensor::new(w.ids.as_slice(), dev)?.unsqueeze(0)?;
            let opts = ForwardOpts { keep: LayerSelect::Only(layers.to_vec()), logits: LogitsSelect::All, lora: true, ..Default::default() };
            let out = model.decoder.forward(&ids, 0, None, &opts)?;
            base.push(changed_unchanged_logprob(&out.logits.unwrap().squeeze(0)?, &w.ids, &w.changed)?);
            let mut cells = Vec::new();
            for (li, &l) in layers.iter().enumerate() {
                let v = &vecs[li][&p.cwe];
                for &a in alphas {
                    let h = out.hidden[&l].broadcast_add(&(v * a)?)?;
                    let o = ForwardOpts { logits: LogitsSelect::All, lora: true, ..Default::default() };
                    let mut tmp = ForwardOutput::default();
                    let h = model.decoder.run_blocks(h, l + 1..n_layers, 0, None, &o, &mut tmp)?;
                    model.decoder.head(&h, &o, &mut tmp)?;
                    cells.push(changed_unchanged_logprob(&tmp.logits.unwrap().squeeze(0)?, &w.ids, &w.changed)?);
                }
            }
            steered.push(cells);
        }
        let base_margin = base[1].0 - base[0].0;
        for k in 0..gain.len() {
            gain[k] += (steered[1][k].0 - steered[0][k].0) - base_margin;
            cost[k] += ((base[0].1 - steered[0][k].1) + (base[1].1 - steered[1][k].1)) / 2.0;
        }
        n += 1;
    }
    if n == 0 {
        bail!("no validation pair has a CWE with training pairs");
    }
    let mut cells = Vec::new();
    for (li, &l) in layers.iter().enumerate() {
        for (ai, &a) in alphas.iter().enumerate() {
            let k = li * alphas.len() + ai;
            cells.push(SweepCell { layer: l, alpha: a, security_gain: gain[k] / n as f64, fluency_cost: cost[k] / n as f64, n_pairs: n });
        }
    }
    Ok(cells)
}

/// The best cell: the largest security gain among cells whose fluency cost is at most
/// `max_cost` nats per token.
pub fn best_cell(cells: &[SweepCell], max_cost: f64) -> Option<&SweepCell> {
    cells.iter().filter(|c| c.fluency_cost <= max_cost).max_by(|a, b| a.security_gain.total_cmp(&b.security_gain))
}

