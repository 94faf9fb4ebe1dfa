//! Rerank: a method past both papers. Sampling is cheap here (a prompt's samples decode as one
//! batch), so for every sample the evaluation keeps, [`Rerank`] samples `k` candidates with the
//! wrapped method and keeps the one scored most secure, preferring candidates whose function is
//! complete. The scorer ([`Scorer`]) is the static judge (bandit, semgrep, cppcheck, flawfinder:
//! fewest findings of the scenario's CWE), the wrapped method's own scorer (DeepGuard's analyzer:
//! highest sequence score of the candidate's code), or both (findings first, then the
//! analyzer). Ties go to the earliest candidate, which is the sample the wrapped method alone
//! would have produced (same seed), so a rerank never differs from its method where the scorer
//! sees nothing to choose between.
//!
//! The static judge is also part of the evaluation's combined verdict; read a static rerank's
//! gain through the security tests (which it never sees) as well: `compare` reports both.

use crate::gen::SampleRec;
use crate::judge::{Item, Judge, JudgeRec};
use crate::scenario::Scenario;
use anyhow::{bail, Result};
use deepguard_methods::guided::Guided;
pub use deepguard_methods::spec::Scorer;
use deepguard_methods::spec::MethodSpec;
use deepguard_runtime::generate::{Base, Method};
use deepguard_runtime::Model;

/// A method as the evaluation runs it: what runtime's [`Method`] does, plus how many candidates
/// it samples per kept sample and how they are scored (only a [`Rerank`] has several).
pub trait Candidates: Method {
    /// Candidates sampled per kept sample: above 1, the pipeline samples this many and keeps the
    /// one scored most secure.
    fn candidates(&self) -> usize {
        1
    }
    /// With several candidates: whether the static judge scores them.
    fn candidates_judged(&self) -> bool {
        false
    }
    /// A security score of a piece of code (higher = more secure) for methods with a scorer
    /// (DeepGuard's analyzer), with the model as [`Method::prepare`] left it.
    fn code_score(&self, _model: &Model, _code: &str) -> Result<Option<f32>> {
        Ok(None)
    }
    /// With several candidates: the temperature of all but the first of each group (None: the
    /// run's).
    fn candidate_temperature(&self) -> Option<f64> {
        None
    }
    /// The repair loop around the method's kept samples ([`crate::repair`]), if any.
    fn repair(&self) -> Option<deepguard_methods::spec::RepairSpec> {
        None
    }
}

impl Candidates for Base {}

impl Candidates for Guided {
    fn code_score(&self, model: &Model, code: &str) -> Result<Option<f32>> {
        Guided::code_score(self, model, code)
    }
}

/// The method a spec describes: a [`Guided`] method, wrapped in a [`Rerank`] and then a
/// [`crate::repair::Repair`] when the spec has them. Every entry point (eval, compare) builds
/// its methods here.
pub fn method_of(spec: &MethodSpec, verbose: bool) -> Box<dyn Candidates> {
    let inner: Box<dyn Candidates> = Box::new(Guided::new(spec.without_rerank(), verbose));
    let inner: Box<dyn Candidates> = match spec.rerank {
        Some(r) => Box::new(Rerank { inner, k: r.k, by: r.by, temperature: r.temperature }),
        None => inner,
    };
    match spec.repair {
        Some(r) => Box::new(crate::repair::Repair { inner, spec: r }),
        None => inner,
    }
}

/// The [`Method`] calls a loop around a method (a struct with an `inner` method) passes through:
/// the model is prepared, prompted and guided as the inner method does it.
macro_rules! pass_through {
    () => {
        fn prepare(&self, model: &mut deepguard_runtime::Model) -> anyhow::Result<()> {
            self.inner.prepare(model)
        }
        fn prompt(&self, model: &deepguard_runtime::Model, prompt: deepguard_runtime::generate::Prompt) -> anyhow::Result<deepguard_runtime::generate::Prompt> {
            self.inner.prompt(model, prompt)
        }
        fn guidance<'a>(&'a self, model: &deepguard_runtime::Model, prompt_ids: &[u32]) -> anyhow::Result<deepguard_runtime::generate::Guidance<'a>> {
            self.inner.guidance(model, prompt_ids)
        }
        fn diagnose(&self, model: &deepguard_runtime::Model, prompts: &[deepguard_runtime::generate::DiagnosticPrompt]) -> anyhow::Result<Option<deepguard_runtime::generate::Diagnosis>> {
            self.inner.diagnose(model, prompts)
        }
    };
}
pub(crate) use pass_through;

/// `inner`, with `k` candidates per kept sample, scored by `by`, all but the first of each group
/// drawn at `temperature` (None: the run's).
pub struct Rerank {
    pub inner: Box<dyn Candidates>,
    pub k: usize,
    pub by: Scorer,
    pub temperature: Option<f64>,
}

impl Method for Rerank {
    fn name(&self) -> String {
        let mut name = match self.by {
            Scorer::Static => format!("{}-rerank{}", self.inner.name(), self.k),
            by => format!("{}-rerank{}-{}", self.inner.name(), self.k, by.name()),
        };
        if let Some(t) = self.temperature {
            name.push_str(&format!("-t{t}"));
        }
        name
    }
    fn settings(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"method": self.inner.settings(), "rerank": {"candidates": self.k, "by": self.by}});
        if let Some(t) = self.temperature {
            v["rerank"]["temperature"] = t.into();
        }
        v
    }
    crate::rerank::pass_through!();
}

impl Candidates for Rerank {
    fn candidates(&self) -> usize {
        self.k.max(1)
    }
    fn candidates_judged(&self) -> bool {
        self.by.uses_static()
    }
    fn candidate_temperature(&self) -> Option<f64> {
        self.temperature
    }
    fn code_score(&self, model: &Model, code: &str) -> Result<Option<f32>> {
        if !self.by.uses_analyzer() {
            return Ok(None);
        }
        match self.inner.code_score(model, code)? {
            Some(s) => Ok(Some(s)),
            None => bail!("rerank by {}: the method {} has no analyzer (rerank a guard: guard:DIR+rerank:K:analyzer)", self.by.name(), self.inner.name()),
        }
    }
}

/// The judge that scores candidates: the static backends only (no unit-test runs, no security
/// tests, no CodeQL: fast, and nothing executes).
pub fn scorer(judge: Judge) -> Judge {
    Judge { backends: judge.backends.into_iter().filter(|b| b.name() != "codeql").collect(), sanitizer: None, exploit: None }
}

/// A candidate's rank key (lower is better): incomplete function, then counting static findings
/// (when judged), then the negated analyzer score (when scored).
pub fn key(c: &SampleRec, verdict: Option<&JudgeRec>) -> (bool, usize, f32) {
    let findings = verdict.map_or(0, |v| v.findings.iter().filter(|f| f.counts).count());
    (!c.cut.complete, findings, -c.score.unwrap_or(0.0))
}

/// One scenario's kept samples from its `n * k` candidates (candidate `j` is stored with idx
/// `j`; group `i` holds candidates `i, i + n, …, i + (k-1) n`, so its first member used the seed
/// of sample `i`). `verdicts`: the static judge's, when it scores. Kept sample `i` gets idx `i`
/// and records the candidate it came from. A group with a candidate missing is left out.
pub fn select(cands: &[SampleRec], verdicts: Option<&[JudgeRec]>, n: usize, k: usize) -> Vec<SampleRec> {
    (0..n)
        .filter_map(|i| {
            let group: Vec<&SampleRec> = (0..k).map(|m| cands.iter().find(|c| c.idx == i + m * n)).collect::<Option<_>>()?;
            let mut best: Option<((bool, usize, f32), &SampleRec)> = None;
            for &c in &group {
                let v = match verdicts {
                    Some(vs) => Some(vs.iter().find(|v| v.idx == c.idx)?),
                    None => None,
                };
                let key = key(c, v);
                if best.as_ref().is_none_or(|(b, _)| key.partial_cmp(b) == Some(std::cmp::Ordering::Less)) {
                    best = Some((key, c));
                }
            }
            let (_, c) = best?;
            let mut s = c.clone();
            s.candidate = Some(c.idx);
            s.idx = i;
            s.cost = Some(group.iter().fold(crate::gen::Cost::default(), |a, c| a.plus(c.cost())));
            s.distinct = Some(distinct(&group));
            Some(s)
        })
        .collect()
}

/// Distinct programs among candidates (their cut code, whitespace aside).
pub fn distinct(group: &[&SampleRec]) -> usize {
    let mut codes: Vec<String> = group.iter().map(|c| c.cut.code.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    codes.sort();
    codes.dedup();
    codes.len()
}

/// Scores every candidate of the scenarios with the static judge, in one batch per backend.
pub fn judge(judge: &Judge, scenarios: &[(&Scenario, &[SampleRec])]) -> Result<Vec<JudgeRec>> {
    let items: Vec<Item> = scenarios.iter().flat_map(|(sc, cs)| cs.iter().map(move |c| Item { scenario: sc, idx: c.idx, program: c.program(sc) })).collect();
    judge.judge(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cut::Cut;
    use crate::judge::Finding;

    fn cand(idx: usize, complete: bool) -> SampleRec {
        SampleRec { scenario: "s".into(), idx, completion: format!("c{idx}"), cut: Cut { code: format!("c{idx}"), complete }, finish_reason: "stop".into(), tokens: 1, candidate: None, score: None, cost: None, distinct: None, repair: None }
    }
    fn verdict(idx: usize, counting: usize, other: usize) -> JudgeRec {
        let f = |counts| Finding { tool: "bandit".into(), rule: "B1".into(), cwe: "CWE-78".into(), line: 1, message: String::new(), counts };
        let findings = (0..counting).map(|_| f(true)).chain((0..other).map(|_| f(false))).collect();
        JudgeRec { scenario: "s".into(), idx, secure: counting == 0, findings, exploit: None }
    }

    #[test]
    fn keeps_the_candidate_with_fewest_counting_findings_and_prefers_the_first_on_ties() {
        // n = 2 kept samples, k = 3 candidates each: group 0 = {0, 2, 4}, group 1 = {1, 3, 5}.
        let cands: Vec<SampleRec> = (0..6).map(|j| cand(j, j != 4)).collect();
        let verdicts = vec![verdict(0, 2, 0), verdict(1, 0, 5), verdict(2, 1, 0), verdict(3, 0, 0), verdict(4, 0, 0), verdict(5, 1, 0)];
        let kept = select(&cands, Some(&verdicts), 2, 3);
        assert_eq!(kept.len(), 2);
        // Group 0: candidate 4 has no finding but its function is incomplete; 2 beats 0.
        assert_eq!((kept[0].idx, kept[0].candidate, kept[0].completion.as_str()), (0, Some(2), "c2"));
        // Group 1: 1 and 3 tie on zero counting findings (non-counting ones do not matter): the first wins.
        assert_eq!((kept[1].idx, kept[1].candidate, kept[1].completion.as_str()), (1, Some(1), "c1"));
        // A kept sample costs its whole group (candidates of earlier runs: their own tokens).
        assert_eq!(kept[0].cost.unwrap().tokens, 3);
        assert_eq!(kept[0].distinct, Some(3));
    }

    #[test]
    fn distinct_programs_ignore_whitespace() {
        let mut a = cand(0, true);
        let mut b = cand(1, true);
        let c = cand(2, true);
        a.cut.code = "x = f(y)\n".into();
        b.cut.code = "x =  f(y)\n\n".into();
        assert_eq!(distinct(&[&a, &b]), 1);
        assert_eq!(distinct(&[&a, &b, &c]), 2);
    }

    #[test]
    fn a_group_with_a_candidate_or_verdict_missing_is_left_out() {
        let cands: Vec<SampleRec> = (0..2).map(|j| cand(j, true)).collect();
        assert!(select(&cands, Some(&[verdict(1, 0, 0)]), 1, 2).is_empty());
        assert!(select(&cands[..1], None, 1, 2).is_empty());
        assert_eq!(select(&cands, Some(&[verdict(0, 1, 0), verdict(1, 0, 0)]), 1, 2)[0].candidate, Some(1));
    }

    #[test]
    fn the_analyzer_orders_candidates_and_breaks_static_ties() {
        // n = 1, k = 3: scores 0.2, 0.9, 0.5.
        let mut cands: Vec<SampleRec> = (0..3).map(|j| cand(j, true)).collect();
        for (c, s) in cands.iter_mut().zip([0.2, 0.9, 0.5]) {
            c.score = Some(s);
        }
        assert_eq!(select(&cands, None, 1, 3)[0].candidate, Some(1), "analyzer alone: highest score");
        // Both: candidate 1 has a counting finding, so the best of the clean ones (2) wins.
        let vs = [verdict(0, 0, 0), verdict(1, 1, 0), verdict(2, 0, 3)];
        assert_eq!(select(&cands, Some(&vs), 1, 3)[0].candidate, Some(2));
    }
}
