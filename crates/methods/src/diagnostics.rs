//! Diagnostics of the guided methods, the questions issue 24 asks of a trained guard and of
//! steering before any generated code is judged:
//!
//! - **Does the analyzer read more than length?** [`AnalyzerAccuracy`]: how often the whole fixed
//!   function scores above the whole vulnerable one, on all pairs and on the *length-matched*
//!   pairs ([`length_matched`]), each beside the length baseline "the longer function is the
//!   fixed one". On length-matched pairs that baseline has nothing to go on, so an analyzer that
//!   only learned length falls towards 50% there.
//! - **Does the prompt-conditioned part of the bias do anything?** [`Spread`] of s̄_prompt (the
//!   analyzer's mean token score of a prompt, which scales the guard's bias by 1 − s̄_prompt)
//!   over a benchmark's prompts: if it hardly varies, every prompt gets the same bias.
//! - **What does probe-then-steer do?** [`RoutingSummary`]: how many prompts it steered, to which
//!   CWE, how many it left alone, and how often the nearest CWE is the prompt's own.
//!
//! Ties of the analyzer (identical scored text) and of the length baseline count half.

use crate::data::Pair;
use crate::guard::Guard;
use crate::steer::{route, Route, SteerVector};
use anyhow::{Context, Result};
use deepguard_runtime::generate::{DiagnosticPrompt, Diagnosis};
use deepguard_runtime::Model;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Length-matched pairs: the whole functions' token counts differ by at most this share of the
/// longer one (|n_fixed − n_vulnerable| ≤ 5% · max(n_fixed, n_vulnerable)).
pub const LENGTH_MATCH: f64 = 0.05;

/// The p(secure) below which probe-then-steer steers (the threshold `steer::hooks_for` applies).
pub const ROUTE_THRESHOLD: f32 = 0.5;

/// The analyzer's sequence scores of both whole functions of one pair.
#[derive(Debug, Clone, Serialize)]
pub struct PairScore {
    pub source: String,
    pub cwe: String,
    pub fixed: f32,
    pub vulnerable: f32,
    /// Token counts of the whole functions (before any cut to the scored length).
    pub fixed_tokens: usize,
    pub vulnerable_tokens: usize,
}

/// Whether a pair's two sides have about the same length ([`LENGTH_MATCH`]).
pub fn length_matched(fixed_tokens: usize, vulnerable_tokens: usize) -> bool {
    let (a, b) = (fixed_tokens as f64, vulnerable_tokens as f64);
    (a - b).abs() <= LENGTH_MATCH * a.max(b)
}

fn half_credit(right: bool, tie: bool) -> f64 {
    if tie {
        0.5
    } else if right {
        1.0
    } else {
        0.0
    }
}

/// Accuracy of the analyzer and of the length baseline on a set of pairs.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Accuracy {
    pub pairs: usize,
    /// Share of pairs with S(fixed) > S(vulnerable) (ties half).
    pub analyzer: f64,
    /// Share of pairs whose longer whole function is the fixed one (ties half).
    pub length_baseline: f64,
    /// Pairs the analyzer scores exactly equal.
    pub ties: usize,
}

impl Accuracy {
    fn of<'a>(scores: impl Iterator<Item = &'a PairScore>) -> Accuracy {
        let mut a = Accuracy::default();
        for s in scores {
            a.pairs += 1;
            a.analyzer += half_credit(s.fixed > s.vulnerable, s.fixed == s.vulnerable);
            a.length_baseline += half_credit(s.fixed_tokens > s.vulnerable_tokens, s.fixed_tokens == s.vulnerable_tokens);
            a.ties += (s.fixed == s.vulnerable) as usize;
        }
        let n = a.pairs.max(1) as f64;
        a.analyzer /= n;
        a.length_baseline /= n;
        a
    }
}

/// The analyzer on whole functions: all pairs, the length-matched ones, and per CWE.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzerAccuracy {
    pub all: Accuracy,
    pub length_matched: Accuracy,
    /// The rule for `length_matched` in words.
    pub length_match_rule: String,
    pub per_cwe: BTreeMap<String, Accuracy>,
}

impl AnalyzerAccuracy {
    pub fn of(scores: &[PairScore]) -> AnalyzerAccuracy {
        let mut cwes: Vec<&str> = scores.iter().map(|s| s.cwe.as_str()).collect();
        cwes.sort();
        cwes.dedup();
        AnalyzerAccuracy {
            all: Accuracy::of(scores.iter()),
            length_matched: Accuracy::of(scores.iter().filter(|s| length_matched(s.fixed_tokens, s.vulnerable_tokens))),
            length_match_rule: format!("whole-function token counts within {:.0}% of the longer side", 100.0 * LENGTH_MATCH),
            per_cwe: cwes.into_iter().map(|c| (c.to_string(), Accuracy::of(scores.iter().filter(|s| s.cwe == c)))).collect(),
        }
    }

    /// A markdown table: per CWE, then all pairs, then the length-matched pairs.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| pairs | n | S(fixed) > S(vulnerable) | longer side is fixed | ties |\n|---|---|---|---|---|\n");
        let row = |s: &mut String, name: &str, a: &Accuracy| {
            let _ = writeln!(s, "| {name} | {} | {:.1}% | {:.1}% | {} |", a.pairs, 100.0 * a.analyzer, 100.0 * a.length_baseline, a.ties);
        };
        for (c, a) in &self.per_cwe {
            row(&mut s, c, a);
        }
        row(&mut s, "all", &self.all);
        row(&mut s, &format!("length-matched ({})", self.length_match_rule), &self.length_matched);
        s
    }
}

/// Scores both whole functions of every pair (the first `max_tokens` tokens of each; lengths are
/// the whole functions'), with the model as it is (attach the guard's adapters first).
pub fn score_pairs(guard: &Guard, model: &Model, pairs: &[Pair], max_tokens: usize, mut on_pair: impl FnMut()) -> Result<Vec<PairScore>> {
    let keep = max_tokens.min(model.cfg().context_length).max(1);
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        let side = |text: &str| -> Result<(f32, usize)> {
            let ids = model.tokenizer.encode(text)?;
            let n = ids.len();
            Ok((guard.score(model, &ids[..n.min(keep)])?.1, n))
        };
        let (fixed, fixed_tokens) = side(&p.fixed).with_context(|| format!("pair {}: fixed side", p.source))?;
        let (vulnerable, vulnerable_tokens) = side(&p.vulnerable).with_context(|| format!("pair {}: vulnerable side", p.source))?;
        out.push(PairScore { source: p.source.clone(), cwe: p.cwe.slug(), fixed, vulnerable, fixed_tokens, vulnerable_tokens });
        on_pair();
    }
    Ok(out)
}

/// Min, quartiles, max, mean and standard deviation of a sample.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub min: f64,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub max: f64,
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

impl Spread {
    /// Quartiles interpolate linearly between order statistics (numpy's default). Empty: n = 0.
    pub fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let x = p * (v.len() - 1) as f64;
            let (i, f) = (x.floor() as usize, x - x.floor());
            v[i] + f * (v[(i + 1).min(v.len() - 1)] - v[i])
        };
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        Spread { n: v.len(), min: v[0], q1: q(0.25), median: q(0.5), q3: q(0.75), max: v[v.len() - 1], mean, std }
    }

    pub fn line(&self) -> String {
        format!(
            "n {} | min {:.4} | q1 {:.4} | median {:.4} | q3 {:.4} | max {:.4} | mean {:.4} | std {:.4}",
            self.n, self.min, self.q1, self.median, self.q3, self.max, self.mean, self.std
        )
    }
}

/// s̄_prompt over a benchmark's prompts and what it does to the paper's bias (1 − s̄) · T.
#[derive(Debug, Clone, Serialize)]
pub struct PromptScores {
    /// (prompt id, s̄_prompt).
    pub prompts: Vec<(String, f32)>,
    pub spread: Spread,
    /// Standard deviation over mean of the bias scale 1 − s̄_prompt: how much the bias's size
    /// varies between prompts (0: the same bias for every prompt).
    pub bias_scale_cv: f64,
}

impl PromptScores {
    pub fn of(prompts: Vec<(String, f32)>) -> PromptScores {
        let s: Vec<f64> = prompts.iter().map(|p| p.1 as f64).collect();
        let spread = Spread::of(&s);
        let scale = Spread::of(&s.iter().map(|x| 1.0 - x).collect::<Vec<_>>());
        let bias_scale_cv = if scale.mean.abs() > 0.0 { scale.std / scale.mean.abs() } else { 0.0 };
        PromptScores { prompts, spread, bias_scale_cv }
    }

    pub fn line(&self) -> String {
        format!("s̄_prompt over {} prompts: {}; bias scale 1 − s̄ varies by {:.1}% (std/mean)", self.spread.n, self.spread.line(), 100.0 * self.bias_scale_cv)
    }
}

/// The guard's s̄_prompt of every prompt (one forward pass each; attach the adapters first). A
/// prompt longer than the model's context is scored on its last context-length tokens.
pub fn score_prompts(guard: &Guard, model: &Model, prompts: &[DiagnosticPrompt]) -> Result<PromptScores> {
    let mut out = Vec::with_capacity(prompts.len());
    for p in prompts {
        let ids = &p.ids[p.ids.len().saturating_sub(model.cfg().context_length)..];
        let (_, s) = guard.score(model, ids).with_context(|| format!("prompt {}", p.id))?;
        out.push((p.id.clone(), s));
    }
    Ok(PromptScores::of(out))
}

/// Probe-then-steer's decisions over a set of prompts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RoutingSummary {
    pub prompts: usize,
    /// Prompts the probe sent to a vector (p(secure) < threshold).
    pub steered: usize,
    /// Prompts left alone (no vector with a probe, or p(secure) ≥ threshold).
    pub left_alone: usize,
    /// Per CWE of the nearest centroid: (prompts routed there, of which steered).
    pub by_cwe: BTreeMap<String, (usize, usize)>,
    /// Prompts whose nearest CWE is the prompt's own CWE, among prompts with a known CWE that
    /// has a vector.
    pub nearest_is_own_cwe: usize,
    pub own_cwe_has_vector: usize,
}

impl RoutingSummary {
    /// `routes[i]` is the decision for a prompt of CWE `own[i]` (None: unknown); `available` are
    /// the CWEs with a per-CWE vector.
    pub fn of(routes: &[Route], own: &[Option<String>], available: &[String]) -> RoutingSummary {
        let mut s = RoutingSummary { prompts: routes.len(), ..Default::default() };
        for (r, own) in routes.iter().zip(own) {
            let applied = r.apply && r.chosen.is_some();
            s.steered += applied as usize;
            s.left_alone += !applied as usize;
            if r.chosen.is_some() {
                let name = r.cwe.map(|c| c.slug()).unwrap_or_else(|| "all".into());
                let e = s.by_cwe.entry(name.clone()).or_default();
                e.0 += 1;
                e.1 += applied as usize;
                if let Some(o) = own.as_ref().filter(|o| available.contains(o)) {
                    s.own_cwe_has_vector += 1;
                    s.nearest_is_own_cwe += (*o == name) as usize;
                }
            }
        }
        s
    }

    pub fn line(&self) -> String {
        let cwes: Vec<String> = self.by_cwe.iter().map(|(c, (n, k))| format!("{c} {k}/{n}")).collect();
        format!(
            "probe-then-steer over {} prompts: steered {}, left alone {}; nearest CWE (steered/routed): {}; nearest CWE is the prompt's own on {} of {} prompts whose CWE has a vector",
            self.prompts,
            self.steered,
            self.left_alone,
            if cwes.is_empty() { "none".into() } else { cwes.join(", ") },
            self.nearest_is_own_cwe,
            self.own_cwe_has_vector
        )
    }
}

/// Normalises a CWE label (`CWE-089`, `cwe-89`) to the vectors' slug (`cwe-089`).
fn slug_of(label: &str) -> Option<String> {
    crate::data::Cwe::parse(label).ok().map(|c| c.slug())
}

/// Routes every prompt as `steer::hooks_for` does for `DIR:auto`.
pub fn route_prompts(model: &Model, vectors: &[SteerVector], prompts: &[DiagnosticPrompt]) -> Result<RoutingSummary> {
    let mut routes = Vec::with_capacity(prompts.len());
    for p in prompts {
        routes.push(route(model, vectors, &p.ids, ROUTE_THRESHOLD).with_context(|| format!("prompt {}", p.id))?);
    }
    let own: Vec<Option<String>> = prompts.iter().map(|p| slug_of(&p.cwe)).collect();
    let available: Vec<String> = vectors.iter().filter_map(|v| v.cwe.map(|c| c.slug())).collect();
    Ok(RoutingSummary::of(&routes, &own, &available))
}

/// The diagnostics of a guided method on a benchmark's prompts: s̄_prompt's spread for a guard,
/// probe-then-steer's routing for `DIR:auto` steering (a fixed vector steers every prompt).
pub fn guided(model: &Model, guard: Option<&Guard>, steer: Option<(&std::path::Path, &crate::steer::Selector)>, prompts: &[DiagnosticPrompt]) -> Result<Option<Diagnosis>> {
    let mut d = Diagnosis { text: String::new(), json: serde_json::json!({}) };
    if let Some(g) = guard {
        let s = score_prompts(g, model, prompts)?;
        d.text.push_str(&s.line());
        d.json["prompt_scores"] = serde_json::to_value(&s)?;
    }
    if let Some((path, sel)) = steer {
        let vectors: Vec<SteerVector> = crate::steer::load_selected(path, sel, model)?.into_iter().map(|v| v.1).collect();
        let r = if *sel == crate::steer::Selector::Auto {
            route_prompts(model, &vectors, prompts)?
        } else {
            let name = vectors.first().map(|v| v.cwe.map(|c| c.slug()).unwrap_or_else(|| "all".into())).unwrap_or_default();
            RoutingSummary { prompts: prompts.len(), steered: prompts.len(), by_cwe: [(name, (prompts.len(), prompts.len()))].into(), ..Default::default() }
        };
        if !d.text.is_empty() {
            d.text.push('\n');
        }
        d.text.push_str(&r.line());
        d.json["routing"] = serde_json::to_value(&r)?;
    }
    Ok((guard.is_some() || steer.is_some()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Cwe;

    fn ps(cwe: &str, fixed: f32, vulnerable: f32, ft: usize, vt: usize) -> PairScore {
        PairScore { source: "t".into(), cwe: cwe.into(), fixed, vulnerable, fixed_tokens: ft, vulnerable_tokens: vt }
    }

    #[test]
    fn length_matched_pairs_are_within_five_percent_of_the_longer_side() {
        assert!(length_matched(100, 100));
        assert!(length_matched(100, 95));
        assert!(length_matched(95, 100));
        assert!(!length_matched(100, 94));
        assert!(!length_matched(10, 11), "one token in ten is 9%");
        assert!(length_matched(0, 0));
    }

    #[test]
    fn analyzer_that_reads_length_drops_to_chance_on_length_matched_pairs() {
        // An "analyzer" whose score is the token count: right on every pair where the fix is
        // longer, and on the length-matched pairs exactly as right as length is.
        let scores = vec![
            ps("cwe-089", 120.0, 100.0, 120, 100),
            ps("cwe-089", 130.0, 100.0, 130, 100),
            ps("cwe-079", 101.0, 100.0, 101, 100), // matched, fix longer by 1
            ps("cwe-079", 99.0, 100.0, 99, 100),   // matched, fix shorter by 1
            ps("cwe-079", 0.4, 0.4, 100, 100),     // matched, analyzer tie
        ];
        let a = AnalyzerAccuracy::of(&scores);
        assert_eq!(a.all.pairs, 5);
        assert!((a.all.analyzer - 3.5 / 5.0).abs() < 1e-12, "{}", a.all.analyzer);
        assert!((a.all.length_baseline - 3.5 / 5.0).abs() < 1e-12);
        assert_eq!(a.all.ties, 1);
        assert_eq!(a.length_matched.pairs, 3);
        assert!((a.length_matched.analyzer - 0.5).abs() < 1e-12);
        assert!((a.length_matched.length_baseline - 0.5).abs() < 1e-12);
        assert_eq!(a.per_cwe["cwe-089"], Accuracy { pairs: 2, analyzer: 1.0, length_baseline: 1.0, ties: 0 });
        assert!(a.markdown().contains("| length-matched (whole-function token counts within 5% of the longer side) | 3 | 50.0% | 50.0% | 1 |"), "{}", a.markdown());
    }

    #[test]
    fn spread_gives_numpy_quartiles_and_population_std() {
        let s = Spread::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.n, s.min, s.q1, s.median, s.q3, s.max, s.mean), (5, 1.0, 2.0, 3.0, 4.0, 5.0, 3.0));
        assert!((s.std - 2f64.sqrt()).abs() < 1e-12);
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((s.q1, s.median, s.q3), (1.75, 2.5, 3.25));
        assert_eq!(Spread::of(&[f64::NAN]).n, 0);
    }

    #[test]
    fn a_constant_prompt_score_gives_a_constant_bias() {
        let same = PromptScores::of(vec![("a".into(), 0.6), ("b".into(), 0.6)]);
        assert_eq!(same.spread.std, 0.0);
        assert_eq!(same.bias_scale_cv, 0.0);
        // 1 - s = 0.2 and 0.6: mean 0.4, std 0.2
        let varied = PromptScores::of(vec![("a".into(), 0.8), ("b".into(), 0.4)]);
        assert!((varied.bias_scale_cv - 0.5).abs() < 1e-6, "{}", varied.bias_scale_cv);
    }

    #[test]
    fn routing_counts_steered_left_alone_per_cwe_and_own_cwe() {
        let r = |chosen: Option<usize>, cwe: Option<u32>, apply: bool| Route { chosen, cwe: cwe.map(Cwe), p_secure: 0.3, apply };
        let routes = vec![r(Some(1), Some(89), true), r(Some(1), Some(89), false), r(Some(2), Some(79), true), r(None, None, false)];
        let own = vec![Some("cwe-089".to_string()), Some("cwe-079".to_string()), Some("cwe-079".to_string()), Some("cwe-089".to_string())];
        let s = RoutingSummary::of(&routes, &own, &["cwe-089".into(), "cwe-079".into()]);
        assert_eq!((s.prompts, s.steered, s.left_alone), (4, 2, 2));
        assert_eq!(s.by_cwe["cwe-089"], (2, 1));
        assert_eq!(s.by_cwe["cwe-079"], (1, 1));
        assert_eq!((s.nearest_is_own_cwe, s.own_cwe_has_vector), (2, 3));
        assert!(s.line().contains("steered 2, left alone 2"), "{}", s.line());
    }
}
