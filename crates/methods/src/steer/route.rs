//! Probe-then-steer: which vector (if any) a prompt gets, and the hooks a steering spec applies
//! to a prompt.

use super::file::{load_selected, Selector, SteerVector};
use crate::data::Cwe;
use anyhow::{bail, Result};
use candle_core::Tensor;
use deepguard_runtime::hooks::AddVector;
use deepguard_runtime::{ForwardOpts, LayerSelect, LogitsSelect, Model};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Probe-then-steer's decision for one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Index of the chosen vector (nearest centroid), if any has a probe.
    pub chosen: Option<usize>,
    pub cwe: Option<Cwe>,
    /// The chosen CWE probe's p(secure) at the prompt's last token.
    pub p_secure: f32,
    /// Steer only when the probe says the code heading this way looks vulnerable.
    pub apply: bool,
}

/// Routes a prompt: nearest CWE centroid at the vectors' layer (last prompt token), then that
/// CWE's probe decides whether to steer (p(secure) < `threshold`). The pooled `all` vector is
/// only a fallback when no per-CWE vector exists.
pub fn route(model: &Model, vectors: &[SteerVector], prompt: &[u32], threshold: f32) -> Result<Route> {
    let mut layers: Vec<usize> = vectors.iter().map(|v| v.layer).collect();
    layers.sort();
    layers.dedup();
    let ids = Tensor::new(prompt, model.decoder.device())?.unsqueeze(0)?;
    let opts = ForwardOpts { keep: LayerSelect::Only(layers), logits: LogitsSelect::None, lora: true, ..Default::default() };
    let out = model.decoder.forward(&ids, 0, None, &opts)?;
    let last = |l: usize| -> Result<Vec<f32>> {
        let h = &out.hidden[&l];
        Ok(h.narrow(1, h.dim(1)? - 1, 1)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let per_cwe = vectors.iter().any(|v| v.cwe.is_some());
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in vectors.iter().enumerate() {
        if v.probe.is_none() || v.centroid.len() != v.hidden || (per_cwe && v.cwe.is_none()) {
            continue;
        }
        let h = last(v.layer)?;
        let dist: f32 = h.iter().zip(&v.centroid).map(|(a, b)| (a - b) * (a - b)).sum();
        if best.is_none_or(|(_, d)| dist < d) {
            best = Some((i, dist));
        }
    }
    Ok(match best {
        None => Route { chosen: None, cwe: None, p_secure: f32::NAN, apply: false },
        Some((i, _)) => {
            let v = &vectors[i];
            let p = v.probe.as_ref().unwrap().prob(&last(v.layer)?);
            Route { chosen: Some(i), cwe: v.cwe, p_secure: p, apply: p < threshold }
        }
    })
}

/// The hooks steering `s` applies to this prompt, and a line saying what was chosen.
pub fn hooks_for(model: &Model, s: &crate::spec::SteerSpec, prompt: &[u32]) -> Result<(Vec<AddVector>, String)> {
    let (path, sel, alpha) = (&s.vectors, &s.select, s.alpha);
    let vectors: Vec<(PathBuf, SteerVector)> = load_selected(path, sel, model)?;
    let from = prompt.len().saturating_sub(1);
    let n_layers = model.cfg().n_layers;
    // The block the vector is added after: its own, or the spec's `layer=L`.
    let hook = |v: &SteerVector| -> Result<(AddVector, usize)> {
        let layer = s.layer.unwrap_or(v.layer);
        if layer == 0 || layer >= n_layers {
            bail!("steer {}: layer={layer} is not a block of this model (1..{})", s.arg(), n_layers - 1);
        }
        let mut h = v.hook(alpha, from)?;
        h.layer = layer;
        Ok((h, layer))
    };
    if *sel == Selector::Auto {
        let vs: Vec<SteerVector> = vectors.iter().map(|v| v.1.clone()).collect();
        let r = route(model, &vs, prompt, 0.5)?;
        let Some(i) = r.chosen.filter(|_| r.apply) else {
            let why = match r.cwe {
                Some(c) => format!("probe-then-steer: nearest CWE {c}, p(secure) {:.2} >= 0.5: not steering", r.p_secure),
                None => "probe-then-steer: no vector with a probe: not steering".to_string(),
            };
            return Ok((vec![], why));
        };
        let v = &vectors[i];
        let (h, layer) = hook(&v.1)?;
        return Ok((vec![h], format!("probe-then-steer: nearest CWE {}, p(secure) {:.2}: steering with {} (block {layer}, alpha {alpha})", r.cwe.map(|c| c.to_string()).unwrap_or("all".into()), r.p_secure, v.0.display())));
    }
    if vectors.len() != 1 {
        bail!("{}: holds {} vectors; name one with {}:CWE or use {}:auto", path.display(), vectors.len(), path.display(), path.display());
    }
    let v = &vectors[0];
    let (h, layer) = hook(&v.1)?;
    Ok((vec![h], format!("steering with {} ({}, block {layer}, alpha {alpha})", v.0.display(), v.1.cwe.map(|c| c.to_string()).unwrap_or("all".into()))))
}

/// The CWE the routing probe of the vectors at `path` picks for a prompt (nearest centroid at
/// the vectors' block, last prompt token), whatever the probe says about its security; None when
/// no vector has a probe.
pub fn route_cwe(model: &Model, path: &Path, prompt: &[u32]) -> Result<Option<Cwe>> {
    let vs: Vec<SteerVector> = load_selected(path, &Selector::Auto, model)?.into_iter().map(|v| v.1).collect();
    Ok(route(model, &vs, prompt, 0.5)?.cwe)
}

