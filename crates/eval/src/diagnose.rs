//! The methods' diagnostics on a benchmark's prompts (`compare` prints them beside its table):
//! each method is readied on the model as for generation and asked what it would do to every
//! scenario's prompt ([`Method::diagnose`]: a guard's s̄_prompt spread, probe-then-steer's routing).

use crate::scenario::Scenario;
use anyhow::{Context, Result};
use deepguard_runtime::generate::{DiagnosticPrompt, Diagnosis, Method};
use deepguard_runtime::Model;

/// The scenarios' prompts, tokenised for `model`.
pub fn prompts(model: &Model, scenarios: &[Scenario]) -> Result<Vec<DiagnosticPrompt>> {
    scenarios.iter().map(|s| Ok(DiagnosticPrompt { id: s.id.clone(), cwe: s.cwe.clone(), ids: model.tokenizer.encode(&s.prompt()).with_context(|| format!("scenario {}", s.id))? })).collect()
}

/// (method name, diagnosis) for every method that reports one. The model is loaded once; each
/// method starts from it without adapters.
pub fn diagnose(scenarios: &[Scenario], methods: &[&dyn Method], load_model: &dyn Fn() -> Result<Model>) -> Result<Vec<(String, Diagnosis)>> {
    let mut model = load_model()?;
    let prompts = prompts(&model, scenarios)?;
    let mut out = Vec::new();
    for m in methods {
        model.decoder.detach_lora();
        m.prepare(&mut model).with_context(|| format!("method {}", m.name()))?;
        if let Some(d) = m.diagnose(&model, &prompts).with_context(|| format!("diagnostics of {}", m.name()))? {
            out.push((m.name(), d));
        }
    }
    model.decoder.detach_lora();
    Ok(out)
}
