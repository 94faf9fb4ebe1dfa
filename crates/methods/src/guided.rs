//! The guided methods as one [`Method`]: steering vectors (Surgical Repair), DeepGuard (adapters +
//! prompt-conditioned logit bias), or both at once. `generate`, `eval`, `compare` and the server
//! share it.

use crate::guard::Guard;
use crate::prior::BiasRule;
use anyhow::{anyhow, Result};
use deepguard_runtime::generate::{DiagnosticPrompt, Diagnosis, Guidance, Method};
use deepguard_runtime::Model;
use std::path::PathBuf;
use std::sync::OnceLock;

pub struct Guided {
    pub steer: Option<(String, f64)>,
    pub guard: Option<(PathBuf, BiasRule, f32)>,
    /// Print what is applied to each prompt on stderr.
    pub verbose: bool,
    loaded: OnceLock<Guard>,
}

impl Guided {
    pub fn new(steer: Option<(String, f64)>, guard: Option<(PathBuf, BiasRule, f32)>, verbose: bool) -> Self {
        Self { steer, guard, verbose, loaded: OnceLock::new() }
    }
}

impl Method for Guided {
    fn name(&self) -> String {
        let mut parts = Vec::new();
        if let Some((dir, rule, s)) = &self.guard {
            let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let rule = if *rule == BiasRule::Paper { String::new() } else { "-ref".into() };
            parts.push(format!("guard-{name}{rule}-s{s}"));
        }
        if let Some((spec, alpha)) = &self.steer {
            // The vectors' folder (`DIR:SEL`) or file stem (`FILE.gguf`) is part of the name, so
            // vectors built at two layers get two run folders.
            let (src, sel) = match spec.rsplit_once(':') {
                Some((dir, sel)) => (std::path::Path::new(dir).file_name(), format!("-{sel}")),
                None => (std::path::Path::new(spec).file_stem(), String::new()),
            };
            let src = src.map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            parts.push(format!("steer-{src}{sel}-a{alpha}"));
        }
        if parts.is_empty() {
            "base".into()
        } else {
            parts.join("+")
        }
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "method": self.name(),
            "steer": self.steer.as_ref().map(|(s, a)| serde_json::json!({"vectors": s, "alpha": a})),
            "guard": self.guard.as_ref().map(|(d, r, s)| serde_json::json!({"dir": d, "bias_rule": r, "strength": s})),
        })
    }

    fn prepare(&self, model: &mut Model) -> Result<()> {
        if let Some((dir, _, _)) = &self.guard {
            let g = Guard::load(dir, model)?;
            g.attach(model)?;
            let _ = self.loaded.set(g);
        }
        Ok(())
    }

    /// The guard's analyzer: the sequence score of `ids` (a candidate's code), with the adapters
    /// attached as in training.
    fn code_score(&self, model: &Model, code: &str) -> Result<Option<f32>> {
        let Some(guard) = self.loaded.get() else { return Ok(None) };
        let ids = model.tokenizer.encode(code)?;
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(guard.score(model, &ids)?.1))
    }

    fn diagnose(&self, model: &Model, prompts: &[DiagnosticPrompt]) -> Result<Option<Diagnosis>> {
        let guard = match &self.guard {
            Some(_) => Some(self.loaded.get().ok_or_else(|| anyhow!("guard not prepared (call prepare first)"))?),
            None => None,
        };
        crate::diagnostics::guided(model, guard, self.steer.as_ref().map(|s| s.0.as_str()), prompts)
    }

    fn guidance<'a>(&'a self, model: &Model, prompt_ids: &[u32]) -> Result<Guidance<'a>> {
        let mut g = Guidance::default();
        if let Some((spec, alpha)) = &self.steer {
            let (hooks, note) = crate::steer::hooks_for(model, spec, *alpha, prompt_ids)?;
            if self.verbose {
                eprintln!("{note}");
            }
            for h in hooks {
                g.hooks.push(Box::new(h));
            }
        }
        if let Some((_, rule, strength)) = &self.guard {
            let guard = self.loaded.get().ok_or_else(|| anyhow!("guard not prepared (call prepare first)"))?;
            let t = std::time::Instant::now();
            let (bias, s) = guard.guidance(model, prompt_ids, *rule, *strength)?;
            if self.verbose {
                eprintln!("guard: prompt score {s:.4} ({:.2}s), {rule:?} bias, strength {strength}", t.elapsed().as_secs_f64());
            }
            g.processors.push(Box::new(bias));
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_from_two_folders_gets_two_names() {
        let name = |spec: &str| Guided::new(Some((spec.into(), 2.0)), None, false).name();
        assert_eq!(name("runs/l8:auto"), "steer-l8-auto-a2");
        assert_eq!(name("runs/l16:auto"), "steer-l16-auto-a2");
        assert_eq!(name("runs/l16/all.gguf"), "steer-all-a2");
        let both = Guided::new(Some(("v:cwe-089".into(), 1.5)), Some((PathBuf::from("runs/g"), BiasRule::Paper, 1.0)), false).name();
        assert_eq!(both, "guard-g-s1+steer-v-cwe-089-a1.5");
    }
}
