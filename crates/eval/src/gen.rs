//! Generation stage: n samples per scenario with a method, cut at the end of the function, each
//! scenario's samples appended to the store as soon as they exist. Scenarios already stored are
//! skipped, so a killed run continues where it stopped.

use crate::cut::{cut, Cut};
use crate::scenario::{Lang, Scenario};
use crate::store::Jsonl;
use anyhow::{Context, Result};
use deepguard_runtime::generate::{generate, Method, Prompt, SamplingParams};
use deepguard_runtime::hooks::LogitsProcessor;
use deepguard_runtime::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleRec {
    pub scenario: String,
    pub idx: usize,
    /// The raw completion as generated.
    pub completion: String,
    /// Cut at the end of the function.
    pub cut: Cut,
    pub finish_reason: String,
    pub tokens: usize,
    /// With a rerank: the candidate (its idx among the candidates) this sample was chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<usize>,
    /// With a rerank by the analyzer: the method's security score of the cut code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// What producing this sample cost: with a rerank or a repair, every candidate and round
    /// behind it (runs of earlier releases: None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// With a rerank: distinct programs (whitespace aside) among this sample's candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<usize>,
    /// With a repair: every version the loop produced and the one kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<crate::repair::Trace>,
}

/// Tokens generated and wall time spent for a sample.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Cost {
    pub tokens: usize,
    pub secs: f64,
}

impl Cost {
    pub fn plus(self, o: Cost) -> Cost {
        Cost { tokens: self.tokens + o.tokens, secs: self.secs + o.secs }
    }
}

impl SampleRec {
    /// The complete program: prompt + cut completion.
    pub fn program(&self, sc: &Scenario) -> String {
        format!("{}{}", sc.prompt(), self.cut.code)
    }

    /// Its cost as recorded, else its own tokens (earlier runs recorded no time).
    pub fn cost(&self) -> Cost {
        self.cost.unwrap_or(Cost { tokens: self.tokens, secs: 0.0 })
    }
}

/// Ends a sample (forces an end-of-sequence token) once its text contains the end of the
/// function: what follows would be cut anyway, so this only saves decoding time.
struct StopAtFunctionEnd {
    lang: Lang,
    prompt: String,
    texts: Arc<Mutex<Vec<String>>>,
    eos: u32,
}

impl LogitsProcessor for StopAtFunctionEnd {
    fn process(&mut self, sample: usize, _step: usize, logits: &mut [f32]) -> Result<()> {
        let done = cut(self.lang, &self.prompt, &self.texts.lock().unwrap()[sample]).complete;
        if done {
            logits.iter_mut().for_each(|l| *l = f32::NEG_INFINITY);
            logits[self.eos as usize] = 0.0;
        }
        Ok(())
    }
}

/// Stored samples grouped by scenario id.
pub fn load_samples(store: &Jsonl) -> Result<BTreeMap<String, Vec<SampleRec>>> {
    let mut m: BTreeMap<String, Vec<SampleRec>> = BTreeMap::new();
    for r in store.load::<SampleRec>()? {
        m.entry(r.scenario.clone()).or_default().push(r);
    }
    for v in m.values_mut() {
        v.sort_by_key(|r| r.idx);
        v.dedup_by_key(|r| r.idx);
    }
    Ok(m)
}

/// Generates the samples of one scenario.
pub fn generate_scenario(model: &Model, method: &dyn Method, sc: &Scenario, params: &SamplingParams, stop_at_end: bool) -> Result<Vec<SampleRec>> {
    // The model sees the prompt as the method shows it (a prompt variant adds a reminder); the
    // program is still the scenario's prompt + the cut completion.
    let prompt = match method.prompt(model, Prompt::Code { text: sc.prompt(), comment: sc.lang.comment().into() })? {
        Prompt::Code { text, .. } => text,
        Prompt::Chat(_) => anyhow::bail!("{}: the method turned a code prompt into a chat", sc.id),
    };
    let ids = model.tokenizer.encode(&prompt)?;
    let mut guidance = method.guidance(model, &ids)?;
    let texts = Arc::new(Mutex::new(vec![String::new(); params.n]));
    let eos = model.tokenizer.eos_id.or_else(|| model.tokenizer.stop_ids.iter().copied().min());
    if let (true, Some(eos)) = (stop_at_end, eos) {
        guidance.processors.push(Box::new(StopAtFunctionEnd { lang: sc.lang, prompt: prompt.clone(), texts: texts.clone(), eos }));
    }
    let t0 = std::time::Instant::now();
    let g = generate(model, &ids, params, &mut guidance, &mut |s, delta| texts.lock().unwrap()[s].push_str(delta))
        .with_context(|| format!("generation failed for {}", sc.id))?;
    // The scenario's wall time (prompt scoring, prefill, the batch's decoding), shared evenly.
    let secs = t0.elapsed().as_secs_f64() / params.n.max(1) as f64;
    Ok(g.samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| SampleRec {
            scenario: sc.id.clone(),
            idx: i,
            cut: cut(sc.lang, &prompt, &s.text),
            completion: s.text,
            finish_reason: serde_json::to_value(s.finish_reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            tokens: s.tokens.len(),
            candidate: None,
            score: None,
            cost: Some(Cost { tokens: s.tokens.len(), secs }),
            distinct: None,
            repair: None,
        })
        .collect())
}
