//! The options that choose a guided method (`--steer`, `--guard`); the method itself is
//! `deepguard_methods::guided::Guided`.

use anyhow::Result;
use deepguard_methods::guided::Guided;
use deepguard_methods::prior::BiasRule;
use std::path::PathBuf;

/// The options that choose a guided method (shared by `generate` and `eval`).
#[derive(clap::Args, Clone, Debug)]
pub struct GuidanceArgs {
    /// Steering vector: FILE.gguf, DIR:CWE (DIR/cwe-XXX.gguf) or DIR:auto (probe-then-steer),
    /// added after its block from the last prompt token on.
    #[arg(long)]
    pub steer: Option<String>,
    /// Steering strength.
    #[arg(long, default_value_t = deepguard_methods::steer::DEFAULT_ALPHA, requires = "steer")]
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
    #[arg(long, value_enum, default_value = "paper", requires = "guard")]
    pub bias_rule: BiasRule,
}

impl GuidanceArgs {
    /// Neither steering nor a guard: the plain model.
    pub fn is_base(&self) -> bool {
        self.steer.is_none() && self.guard.is_none()
    }

    pub fn method(&self, verbose: bool) -> Result<Guided> {
        let guard = self.guard.clone().map(|d| (d, self.bias_rule, self.guard_strength));
        Ok(Guided::new(self.steer.clone().map(|s| (s, self.alpha)), guard, verbose))
    }
}

