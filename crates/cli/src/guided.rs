//! The guided methods as one generation config: steering vectors (`--steer`), DeepGuard
//! (`--guard`), or both at once. `generate` and `eval` share it.

use anyhow::{anyhow, Result};
use deepguard_eval::method::Method;
use deepguard_methods::guard::Guard;
use deepguard_methods::prior::BiasRule;
use deepguard_runtime::generate::Guidance;
use deepguard_runtime::Model;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The options that choose a guided method (shared by `generate` and `eval`).
#[derive(clap::Args, Clone, Debug)]
pub struct GuidanceArgs {
    /// Steering vector: FILE.gguf, DIR:CWE (DIR/cwe-XXX.gguf) or DIR:auto (probe-then-steer),
    /// added after its block from the last prompt token on.
    #[arg(long)]
    pub steer: Option<String>,
    /// Steering strength.
    #[arg(long, default_value_t = 4.0, requires = "steer")]
    pub alpha: f64,
    /// DeepGuard: a guard folder from `deepguard train`. Its adapters are attached, the prompt
    /// is scored by its analyzer, and the security bias is added to the logits at every step.
    /// With --steer too: both at once.
    #[arg(long)]
    pub guard: Option<PathBuf>,
    /// Scale of the guard's logit bias.
    #[arg(long, default_value_t = 1.0, requires = "guard")]
    pub guard_strength: f32,
    /// Bias rule: `paper` (1 - s_prompt) * T, or `reference` (the authors' code).
    #[arg(long, default_value = "paper", value_parser = ["paper", "reference"], requires = "guard")]
    pub bias_rule: String,
}

impl GuidanceArgs {
    pub fn method(&self, verbose: bool) -> Result<Guided> {
        let guard = self.guard.clone().map(|d| BiasRule::parse(&self.bias_rule).map(|r| (d, r, self.guard_strength))).transpose()?;
        Ok(Guided::new(self.steer.clone().map(|s| (s, self.alpha)), guard, verbose))
    }
}

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
            let sel = spec.rsplit(':').next().filter(|_| spec.contains(':')).unwrap_or("file");
            parts.push(format!("steer-{sel}-a{alpha}"));
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
