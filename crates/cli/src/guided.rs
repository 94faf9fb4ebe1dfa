//! The options that choose a method: `--method SPEC`, or its shorthands `--steer`, `--guard`
//! and their settings. Both end in one `deepguard_methods::spec::MethodSpec`.

use anyhow::Result;
use deepguard_methods::prior::BiasRule;
use deepguard_methods::spec::{self, GuardSpec, MethodSpec, RerankSpec, Scorer, SteerSpec};
use std::path::PathBuf;

/// The options that choose a method (shared by `generate`, `eval` and `serve`).
#[derive(clap::Args, Clone, Debug)]
pub struct GuidanceArgs {
    #[arg(long, value_name = "SPEC", help = spec::HELP, conflicts_with_all = ["steer", "guard"])]
    pub method: Option<MethodSpec>,
    /// Steering vector: FILE.gguf, DIR:CWE (DIR/cwe-XXX.gguf) or DIR:auto (probe-then-steer),
    /// added after its block from the last prompt token on (= `--method steer:...`).
    #[arg(long)]
    pub steer: Option<String>,
    /// Steering strength.
    #[arg(long, default_value_t = deepguard_methods::steer::DEFAULT_ALPHA, requires = "steer")]
    pub alpha: f64,
    #[arg(long, help = crate::args::GUARD_HELP)]
    pub guard: Option<PathBuf>,
    /// Scale of the guard's logit bias.
    #[arg(long, default_value_t = 1.0, requires = "guard")]
    pub guard_strength: f32,
    /// Bias rule: `paper` (1 - s_prompt) * T, or `reference` (the authors' code).
    #[arg(long, value_enum, default_value = "paper", requires = "guard")]
    pub bias_rule: BiasRule,
}

impl GuidanceArgs {
    /// The method these options describe.
    pub fn spec(&self) -> Result<MethodSpec> {
        if let Some(m) = &self.method {
            return Ok(m.clone());
        }
        Ok(MethodSpec {
            guard: self.guard.clone().map(|dir| GuardSpec { dir, strength: self.guard_strength, rule: self.bias_rule, prior: true }),
            steer: self.steer.as_deref().map(|s| SteerSpec::from_arg(s, self.alpha)).transpose()?,
            ..MethodSpec::default()
        })
    }
}

/// `--rerank K` and `--rerank-by` (eval; = `--method ...+rerank:K:SCORER`).
#[derive(clap::Args, Clone, Debug)]
pub struct RerankArgs {
    /// Rerank: sample K candidates per sample with the method and keep the one scored most secure
    /// (see --rerank-by).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(2..), conflicts_with = "method")]
    pub rerank: Option<u64>,
    /// What scores the rerank's candidates: the static judge, the guard's analyzer (needs
    /// --guard), or both (findings first, then the analyzer).
    #[arg(long, value_enum, default_value = "static", requires = "rerank")]
    pub rerank_by: Scorer,
}

impl RerankArgs {
    pub fn spec(&self) -> Option<RerankSpec> {
        self.rerank.map(|k| RerankSpec { k: k as usize, by: self.rerank_by, temperature: None })
    }
}
