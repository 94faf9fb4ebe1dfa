//! Validation: losses and analyzer accuracy on the val pairs, and the line that reports them.

use super::Trainer;
use crate::features::Example;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Validation results: mean losses and how well the analyzer orders the pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValStats {
    pub pairs: usize,
    pub loss: f64,
    pub gen: f64,
    pub sec: f64,
    pub kl: f64,
    /// Fraction of pairs with S(fixed) > S(vulnerable).
    pub accuracy: f64,
    /// Length-only baselines on the same pairs: "the longer side is the fixed one" (ties count
    /// half), on the windows the analyzer saw and on whole functions.
    pub length_window: f64,
    pub length_full: f64,
    pub per_cwe: Vec<(String, usize, f64)>,
}

pub fn validate(tr: &Trainer, val: &[Example], progress: bool) -> Result<ValStats> {
    let mut s = ValStats { pairs: val.len(), ..Default::default() };
    if val.is_empty() {
        return Ok(s);
    }
    let bar = progress.then(|| bar(val.len() as u64, "validation"));
    let mut by_cwe: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let longer = |a: usize, b: usize| if a > b { 1.0 } else if a == b { 0.5 } else { 0.0 };
    for ex in val {
        let (o, _) = tr.pair(ex, None, None).with_context(|| format!("validation pair {}", ex.source))?;
        s.loss += o.total(&tr.cfg);
        s.gen += o.gen;
        s.sec += o.sec;
        s.kl += o.kl;
        let right = o.s_sec > o.s_vul;
        s.accuracy += right as u8 as f64;
        let e = by_cwe.entry(ex.cwe.slug()).or_default();
        e.0 += 1;
        e.1 += right as usize;
        s.length_window += longer(ex.secure.ids.len(), ex.vulnerable.ids.len());
        s.length_full += longer(ex.secure.full_tokens, ex.vulnerable.full_tokens);
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    let n = val.len() as f64;
    for x in [&mut s.loss, &mut s.gen, &mut s.sec, &mut s.kl, &mut s.accuracy, &mut s.length_window, &mut s.length_full] {
        *x /= n;
    }
    s.per_cwe = by_cwe.into_iter().map(|(k, (n, r))| (k, n, r as f64 / n as f64)).collect();
    Ok(s)
}

pub(super) fn bar(len: u64, label: &str) -> crate::progress::Progress {
    crate::progress::Progress::new(len, label, "pairs")
}


pub fn val_line(label: &str, v: &ValStats) -> String {
    format!(
        "{label}: val loss {:.4} (gen {:.4}, sec {:.4}, kl {:.5}); analyzer S(fixed) > S(vulnerable) on {:.1}% of {} pairs (length baseline: windows {:.1}%, whole functions {:.1}%)",
        v.loss,
        v.gen,
        v.sec,
        v.kl,
        100.0 * v.accuracy,
        v.pairs,
        100.0 * v.length_window,
        100.0 * v.length_full
    )
}

