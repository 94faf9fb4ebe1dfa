//! A method is a generation config: a name, its settings (recorded in the output) and the
//! guidance it adds to decoding. `base` adds nothing; steering (`--steer`) adds residual hooks
//! and guided decoding (`--guard`) adds logits processors, by implementing this trait.

use anyhow::Result;
use deepguard_runtime::generate::Guidance;
use deepguard_runtime::Model;

pub trait Method {
    /// Short name used as the method's key in stores and reports (e.g. `base`, `steer-a4`).
    fn name(&self) -> String;
    /// Everything that defines the method, recorded next to the decoding settings.
    fn settings(&self) -> serde_json::Value;
    /// Readies the model once before generation (e.g. attaches a guard's adapters).
    fn prepare(&self, _model: &mut Model) -> Result<()> {
        Ok(())
    }
    /// Hooks and processors for one request.
    fn guidance<'a>(&'a self, model: &Model, prompt_ids: &[u32]) -> Result<Guidance<'a>>;
}

/// The unmodified model.
pub struct Base;

impl Method for Base {
    fn name(&self) -> String {
        "base".into()
    }
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"method": "base"})
    }
    fn guidance<'a>(&'a self, _model: &Model, _prompt_ids: &[u32]) -> Result<Guidance<'a>> {
        Ok(Guidance::default())
    }
}
