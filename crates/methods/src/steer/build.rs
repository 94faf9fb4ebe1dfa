//! Building the vectors: the mean difference of secure and vulnerable representations per CWE
//! (and over all pairs), each with a probe and a centroid for routing; the default strength and
//! block, and the block chosen from a probe report.

use super::file::SteerVector;
use crate::data::{Cwe, WindowSpec};
use crate::probe::logreg::{LogReg, Matrix};
use crate::probe::{Activations, GroupReport, Pooling};
use anyhow::{bail, Result};
use deepguard_runtime::Model;

/// Mean difference (secure - vulnerable) and mean of both sides over the pairs `idx`.
pub fn mean_difference(x: &Matrix, idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let d = x.cols;
    let (mut diff, mut centroid) = (vec![0f64; d], vec![0f64; d]);
    for &p in idx {
        for (j, (&s, &v)) in x.row(2 * p + 1).iter().zip(x.row(2 * p)).enumerate() {
            diff[j] += (s - v) as f64;
            centroid[j] += (s + v) as f64;
        }
    }
    let n = idx.len().max(1) as f64;
    (diff.iter().map(|v| (v / n) as f32).collect(), centroid.iter().map(|v| (v / (2.0 * n)) as f32).collect())
}

/// One vector per CWE (and one over all pairs) at `layer`, each with a probe fitted on its pairs.
pub fn build(model: &Model, acts: &Activations, pooling: Pooling, layer: usize, spec: &WindowSpec, l2: f64) -> Result<Vec<SteerVector>> {
    if layer >= acts.n_layers {
        bail!("layer {layer} does not exist (the model has {} blocks)", acts.n_layers);
    }
    let x = acts.layer(pooling, layer);
    let mut cwes: Vec<Option<Cwe>> = acts.cwes.iter().map(|&c| Some(c)).collect();
    cwes.sort();
    cwes.dedup();
    cwes.insert(0, None);
    let position = format!(
        "output of block {layer}, {} pooling over a window of {} tokens aligned {:?}{}",
        pooling.name(),
        spec.budget,
        spec.align,
        if spec.equal_length { ", equal-length sides" } else { "" }
    );
    let mut out = Vec::new();
    for cwe in cwes {
        let idx: Vec<usize> = (0..acts.n_pairs()).filter(|&i| cwe.is_none_or(|c| acts.cwes[i] == c)).collect();
        let (direction, centroid) = mean_difference(&x, &idx);
        let items: Vec<usize> = idx.iter().flat_map(|&p| [2 * p, 2 * p + 1]).collect();
        let y: Vec<bool> = (0..items.len()).map(|i| i % 2 == 1).collect();
        let probe = LogReg::fit(&x.select(&items), &y, l2);
        out.push(SteerVector {
            cwe,
            layer,
            direction,
            model_arch: model.cfg().arch.name().to_string(),
            model_fingerprint: model.info.fingerprint.clone(),
            n_layers: acts.n_layers,
            hidden: acts.hidden,
            n_pairs: idx.len(),
            position: position.clone(),
            probe: Some(probe),
            centroid,
        });
    }
    Ok(out)
}

/// The default steering strength: alpha 2 kept pass@1 within noise of the base model on the dev
/// set at blocks 8 and 16, while alpha 4 broke the code (pass@1 -27 points; `deepguard compare`,
/// docs/surgical-repair.md).
pub const DEFAULT_ALPHA: f64 = 2.0;

/// The default steering block for a model of `n_layers` blocks: a third of the way up (block 8
/// of Qwen2.5-Coder-0.5B's 24). Chosen by `deepguard compare` on generated dev code among blocks
/// 8, 12 and 16 at alpha 1-4: the cell with the best sec-pass@1 among those that kept pass@1
/// within 5 points of base. No cell made the code measurably more secure (docs/surgical-repair.md).
pub fn default_layer(n_layers: usize) -> usize {
    n_layers / 3
}

/// The steering layer from probe results: among blocks >= 1 whose accuracy is within `tol` of
/// the peak, the one with the largest relative direction norm. Early layers often separate the
/// classes with a direction of near-zero size; a vector there would steer nothing.
pub fn choose_layer(g: &GroupReport, tol: f64) -> usize {
    let peak = g.layers.iter().skip(1).map(|l| l.accuracy).fold(0.0, f64::max);
    g.layers.iter().skip(1).filter(|l| l.accuracy >= peak - tol).max_by(|a, b| a.rel_norm.total_cmp(&b.rel_norm)).map(|l| l.layer).unwrap_or(1)
}

