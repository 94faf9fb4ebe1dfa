//! Sampling-based generation: one prefill of the prompt, then n samples decoded together as a
//! batch (the prompt's KV cache is shared by copying it n times); finished samples leave the batch.
//! [`Decoding`] holds one prompt's samples in flight; [`generate`] drives one alone, the server
//! drives many side by side (each at its own position) with the same steps.

use crate::decoder::{ForwardOpts, LogitsSelect};
use crate::hooks::{LogitsProcessor, ResidualHook};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::tokenizer::TextStream;
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub max_tokens: usize,
    /// Generation of a sample ends at the first of these strings (not included in its text).
    pub stop: Vec<String>,
    pub n: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, seed: 42, max_tokens: 256, stop: vec![], n: 1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence / end-of-turn token.
    Eos,
    Stop,
    Length,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub samples: Vec<Sample>,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    /// Decode steps run (the longest sample's length).
    pub decode_steps: usize,
    /// Wall time of each decode step (sampling plus the forward pass), for benchmarks.
    #[serde(skip)]
    pub step_secs: Vec<f64>,
}

/// Hooks and processors active for one request.
#[derive(Default)]
pub struct Guidance<'a> {
    pub hooks: Vec<Box<dyn ResidualHook + 'a>>,
    pub processors: Vec<Box<dyn LogitsProcessor + 'a>>,
}

/// A prompt before it is tokenised, as a method may rewrite it ([`Method::prompt`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Code for the model to continue; `comment` is its language's line-comment marker (`#`,
    /// `//`).
    Code { text: String, comment: String },
    /// Chat messages, rendered with the model's template once the method has seen them.
    Chat(Vec<crate::chat::Message>),
}

/// A method is a generation config: a name, its settings (recorded with every result), the
/// prompt it shows the model and the guidance it adds to decoding. [`Base`] changes nothing;
/// steering vectors add residual hooks, DeepGuard adds logits processors, the prompt variants
/// rewrite the prompt (`deepguard_methods::guided`), by implementing this trait. The evaluation
/// pipeline, the server and `generate` all take a `&dyn Method`.
pub trait Method: Send + Sync {
    /// Short name used as the method's key in stores and reports (e.g. `base`, `steer-vecs-auto-a4`).
    fn name(&self) -> String;
    /// Everything that defines the method, recorded next to the decoding settings.
    fn settings(&self) -> serde_json::Value;
    /// Readies the model once before generation (e.g. attaches a guard's adapters).
    fn prepare(&self, _model: &mut Model) -> Result<()> {
        Ok(())
    }
    /// The prompt the model is given for `prompt` (by default, `prompt` itself).
    fn prompt(&self, _model: &Model, prompt: Prompt) -> Result<Prompt> {
        Ok(prompt)
    }
    /// Hooks and processors for one request (`prompt_ids`: the prompt as [`Method::prompt`]
    /// left it, tokenised).
    fn guidance<'a>(&'a self, model: &Model, prompt_ids: &[u32]) -> Result<Guidance<'a>>;
    /// What the method would do to each of these prompts, summarised (DeepGuard: the spread of
    /// its prompt scores; probe-then-steer: where it routes them), with the model as
    /// [`Method::prepare`] left it. None: nothing to report.
    fn diagnose(&self, _model: &Model, _prompts: &[DiagnosticPrompt]) -> Result<Option<Diagnosis>> {
        Ok(None)
    }
}

/// A benchmark prompt for [`Method::diagnose`].
#[derive(Debug, Clone)]
pub struct DiagnosticPrompt {
    pub id: String,
    /// The scenario's CWE as the benchmark writes it (e.g. `CWE-089`).
    pub cwe: String,
    pub ids: Vec<u32>,
}

/// A method's diagnostics: lines for a terminal and the same as JSON.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    pub text: String,
    pub json: serde_json::Value,
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

/// Generates `params.n` samples continuing `prompt_ids`. `on_text(sample, delta)` receives each
/// sample's text as it is decoded (already cut at stop strings).
pub fn generate(
    model: &Model,
    prompt_ids: &[u32],
    params: &SamplingParams,
    guidance: &mut Guidance,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Generation> {
    let p = prompt_ids.len();
    let mut run = Decoding::new(model, p, params)?;
    let dec = &model.decoder;
    let dev = dec.device();
    let hooks: Vec<&dyn ResidualHook> = guidance.hooks.iter().map(|h| h.as_ref()).collect();
    let opts = ForwardOpts { logits: LogitsSelect::Last, hooks: &hooks, lora: true, ..Default::default() };

    let t0 = Instant::now();
    let input = Tensor::new(prompt_ids, dev)?.unsqueeze(0)?;
    let logits = dec.forward(&input, 0, Some(&mut run.cache), &opts)?.logits.unwrap();
    let prefill_secs = t0.elapsed().as_secs_f64();
    crate::profile::report(&format!("prefill of {p} tokens"), prefill_secs, 1);
    let mut logits = run.prefilled(logits)?;

    let t1 = Instant::now();
    let mut step_secs = Vec::with_capacity(params.max_tokens);
    while !run.is_done() {
        let step_start = Instant::now();
        if run.step(model, &logits, &mut guidance.processors, on_text)? {
            step_secs.push(step_start.elapsed().as_secs_f64());
            break;
        }
        let input = Tensor::new(run.next_tokens(), dev)?.unsqueeze(1)?;
        logits = dec.forward(&input, run.pos(), Some(&mut run.cache), &opts)?.logits.unwrap();
        step_secs.push(step_start.elapsed().as_secs_f64());
    }
    let decode_secs = t1.elapsed().as_secs_f64();
    let steps = run.steps();
    crate::profile::report(&format!("decode, batch of {}", params.n), decode_secs, steps);
    let samples = run.into_samples();
    let generated_tokens = samples.iter().map(|s| s.tokens.len()).sum();
    Ok(Generation { samples, prompt_tokens: p, generated_tokens, prefill_secs, decode_secs, decode_steps: steps, step_secs })
}

/// One prompt's `n` samples in flight: their KV cache (one row per live sample), generators,
/// texts and finish reasons. [`generate`] drives one of these alone; the server drives many at
/// once, each at its own position (`Decoder::forward_ragged`). Either way a request sees the
/// same sequence of operations, so its output does not depend on what it is batched with.
///
/// The cycle: [`Decoding::new`], the prompt's prefill into `cache` (one row), [`prefilled`]
/// (n rows), then [`step`] on each step's logits and a forward pass of [`next_tokens`] at
/// [`pos`] until `step` returns true.
///
/// [`prefilled`]: Decoding::prefilled
/// [`step`]: Decoding::step
/// [`next_tokens`]: Decoding::next_tokens
/// [`pos`]: Decoding::pos
pub struct Decoding {
    pub params: SamplingParams,
    pub prompt_tokens: usize,
    /// The prompt's and samples' keys and values, one row per live sample.
    pub cache: KvCache,
    rngs: Vec<rand::rngs::StdRng>,
    streams: Vec<TextStream>,
    texts: Vec<String>,
    emitted: Vec<usize>,
    finish: Vec<Option<FinishReason>>,
    /// live[r] = sample index of batch row r (ascending)
    live: Vec<usize>,
    next: Vec<u32>,
    max_stop: usize,
    step: usize,
}

impl Decoding {
    /// Checks a prompt of `prompt_len` tokens and `params` against the model and sizes the
    /// cache; no computation yet.
    pub fn new(model: &Model, prompt_len: usize, params: &SamplingParams) -> Result<Self> {
        let ctx = model.cfg().context_length;
        let p = prompt_len;
        if p == 0 {
            bail!("the prompt is empty");
        }
        if p.checked_add(params.max_tokens).is_none_or(|t| t > ctx) {
            bail!(
                "prompt of {p} tokens + {} new tokens exceeds the model's context of {ctx} tokens (by {})",
                params.max_tokens,
                p as u128 + params.max_tokens as u128 - ctx as u128
            );
        }
        if params.n == 0 {
            bail!("n must be at least 1");
        }
        let n = params.n;
        Ok(Self {
            cache: KvCache::new(model.decoder.cfg.n_layers, p + params.max_tokens),
            rngs: (0..n).map(|i| rand::rngs::StdRng::seed_from_u64(params.seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))).collect(),
            streams: vec![TextStream::default(); n],
            texts: vec![String::new(); n],
            emitted: vec![0usize; n],
            finish: vec![None; n],
            live: (0..n).collect(),
            next: Vec::new(),
            max_stop: params.stop.iter().map(|s| s.len()).max().unwrap_or(0),
            step: 0,
            params: params.clone(),
            prompt_tokens: p,
        })
    }

    /// After the prompt's prefill (the cache holds it in one row, `logits` (1, vocab) is its
    /// last position): the cache and logits repeated for the n samples.
    pub fn prefilled(&mut self, logits: Tensor) -> Result<Tensor> {
        let n = self.params.n;
        if n > 1 {
            self.cache.expand_batch(n)?;
            return Ok(logits.repeat((n, 1))?);
        }
        Ok(logits)
    }

    /// The next-token rows of `logits` (one per live sample) after the processors, which run in
    /// order (they may keep per-sample state).
    pub fn processed_rows(&self, logits: &Tensor, processors: &mut [Box<dyn LogitsProcessor + '_>]) -> Result<Vec<Vec<f32>>> {
        let mut rows: Vec<Vec<f32>> = logits.to_vec2()?;
        if rows.len() != self.live.len() {
            bail!("{} logit rows for {} live samples", rows.len(), self.live.len());
        }
        for (l, &s) in rows.iter_mut().zip(&self.live) {
            for proc in processors.iter_mut() {
                proc.process(s, self.step, l)?;
            }
        }
        Ok(rows)
    }

    /// One token per row of `rows` (from [`processed_rows`](Self::processed_rows)), each drawn
    /// with its sample's own generator.
    pub fn sample(&mut self, rows: &mut [Vec<f32>]) -> Vec<u32> {
        sample_rows(rows, &self.live, &mut self.rngs, self.params.temperature, self.params.top_p)
    }

    /// Takes one sampled token per live row: texts grow (`on_text(sample, delta)` gets what can
    /// no longer turn into a stop string), finished samples leave the cache. True when every
    /// sample has finished.
    pub fn accept(&mut self, model: &Model, mut next: Vec<u32>, on_text: &mut dyn FnMut(usize, &str)) -> Result<bool> {
        let tok = &model.tokenizer;
        let step = self.step;
        let params = &self.params;
        let max_stop = self.max_stop;
        for (r, &s) in self.live.iter().enumerate() {
            let id = next[r];
            if tok.stop_ids.contains(&id) {
                self.finish[s] = Some(FinishReason::Eos);
                continue;
            }
            if let Some(delta) = self.streams[s].push(tok, id)? {
                self.texts[s].push_str(&delta);
            }
            // Stop strings: cut the text at the first one.
            if max_stop > 0 {
                let from = self.emitted[s].saturating_sub(max_stop);
                let text = &self.texts[s];
                if let Some(cut) = params.stop.iter().filter_map(|st| text[from..].find(st.as_str()).map(|i| from + i)).min() {
                    self.texts[s].truncate(cut);
                    self.finish[s] = Some(FinishReason::Stop);
                }
            }
            if step + 1 == params.max_tokens && self.finish[s].is_none() {
                self.finish[s] = Some(FinishReason::Length);
            }
            // Stream what can no longer turn into a stop string.
            let safe = if self.finish[s].is_some() { self.texts[s].len() } else { safe_prefix(&self.texts[s], &params.stop) };
            if safe > self.emitted[s] {
                on_text(s, &self.texts[s][self.emitted[s]..safe]);
                self.emitted[s] = safe;
            }
        }
        self.step = step + 1;
        let keep: Vec<usize> = (0..self.live.len()).filter(|&r| self.finish[self.live[r]].is_none()).collect();
        if keep.is_empty() {
            self.live.clear();
            self.next.clear();
            return Ok(true);
        }
        if keep.len() < self.live.len() {
            self.cache.retain_rows(&keep, model.decoder.device())?;
            next = keep.iter().map(|&r| next[r]).collect();
            self.live = keep.iter().map(|&r| self.live[r]).collect();
        }
        self.next = next;
        Ok(false)
    }

    /// [`processed_rows`](Self::processed_rows), [`sample`](Self::sample) and
    /// [`accept`](Self::accept) in one: one decoding step from `logits` (live rows, vocab).
    pub fn step(&mut self, model: &Model, logits: &Tensor, processors: &mut [Box<dyn LogitsProcessor + '_>], on_text: &mut dyn FnMut(usize, &str)) -> Result<bool> {
        let sampling = crate::profile::span(crate::profile::Stage::Sample);
        let mut rows = self.processed_rows(logits, processors)?;
        let next = self.sample(&mut rows);
        drop(sampling);
        self.accept(model, next, on_text)
    }

    /// The tokens to feed next, one per live sample (in row order).
    pub fn next_tokens(&self) -> &[u32] {
        &self.next
    }
    /// Absolute position of the next tokens to feed (= positions cached).
    pub fn pos(&self) -> usize {
        self.cache.len()
    }
    /// Live samples (rows of the cache once prefilled).
    pub fn rows(&self) -> usize {
        self.live.len()
    }
    /// Decoding steps taken (tokens sampled per live sample).
    pub fn steps(&self) -> usize {
        self.step
    }
    /// Every sample has finished (immediately so for `max_tokens` 0).
    pub fn is_done(&self) -> bool {
        self.live.is_empty() || self.step >= self.params.max_tokens
    }
    pub fn finish_reason(&self, sample: usize) -> Option<FinishReason> {
        self.finish[sample]
    }
    /// Tokens sample `sample` has generated so far.
    pub fn sample_tokens(&self, sample: usize) -> usize {
        self.streams[sample].tokens.len()
    }

    /// The samples, text cut at stop strings; unfinished ones (max_tokens 0) end by length.
    pub fn into_samples(self) -> Vec<Sample> {
        self.texts
            .into_iter()
            .zip(self.streams)
            .zip(self.finish)
            .map(|((text, st), f)| Sample { text, tokens: st.tokens, finish_reason: f.unwrap_or(FinishReason::Length) })
            .collect()
    }
}

/// Length of the prefix of `text` that no continuation can turn into a stop string.
fn safe_prefix(text: &str, stops: &[String]) -> usize {
    let mut safe = text.len();
    for st in stops {
        for k in (1..st.len()).rev() {
            if text.len() >= k && text.is_char_boundary(text.len() - k) && st.starts_with(&text[text.len() - k..]) {
                safe = safe.min(text.len() - k);
                break;
            }
        }
    }
    while !text.is_char_boundary(safe) {
        safe -= 1;
    }
    safe
}

/// One token per row; row `r` belongs to sample `live[r]` (ascending) and draws from
/// `rngs[live[r]]`. Rows are split between threads: sampling a 151,936-entry row costs about a
/// millisecond, a tenth of a batched decode step for n = 10 on one thread.
fn sample_rows(rows: &mut [Vec<f32>], live: &[usize], rngs: &mut [rand::rngs::StdRng], temperature: f64, top_p: f64) -> Vec<u32> {
    let mut mine: Vec<&mut rand::rngs::StdRng> = rngs.iter_mut().enumerate().filter(|(i, _)| live.binary_search(i).is_ok()).map(|(_, r)| r).collect();
    debug_assert_eq!(mine.len(), rows.len());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(rows.len());
    if threads <= 1 || temperature <= 0.0 {
        return rows.iter_mut().zip(mine.iter_mut()).map(|(l, g)| sample_token(l, temperature, top_p, *g)).collect();
    }
    let per = rows.len().div_ceil(threads);
    std::thread::scope(|sc| {
        let handles: Vec<_> = rows
            .chunks_mut(per)
            .zip(mine.chunks_mut(per))
            .map(|(rs, gs)| sc.spawn(move || rs.iter_mut().zip(gs.iter_mut()).map(|(l, g)| sample_token(l, temperature, top_p, *g)).collect::<Vec<u32>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("sampling thread")).collect()
    })
}

/// Greedy when `temperature <= 0`; otherwise nucleus sampling from softmax(logits / T).
pub fn sample_token(logits: &mut [f32], temperature: f64, top_p: f64, rng: &mut impl Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let inv_t = (1.0 / temperature) as f32;
    // unnormalised probabilities e^((l - max) / T); every comparison below is scaled by their sum
    let max = crate::kernels::vmath::max(logits);
    let sum = crate::kernels::vmath::exp_shifted_sum(logits, max, inv_t);
    // The nucleus is a prefix of the tokens sorted by probability. Sorting the whole vocabulary
    // every step is slow, so sort only the tokens above a threshold whose mass already reaches
    // top_p: the nucleus is then guaranteed to be among them (exact, not an approximation).
    let target = top_p.clamp(0.0, 1.0) * sum;
    let mut threshold = 1e-4 * sum;
    let mut cand: Vec<(u32, f32)>;
    loop {
        let t = threshold as f32;
        cand = logits.iter().enumerate().filter(|(_, &p)| p >= t).map(|(i, &p)| (i as u32, p)).collect();
        let mass: f64 = cand.iter().map(|c| c.1 as f64).sum();
        if mass >= target || threshold == 0.0 {
            break;
        }
        threshold = if threshold < 1e-12 * sum { 0.0 } else { threshold * 1e-3 };
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut cum = 0f64;
    let mut cut = cand.len();
    for (i, c) in cand.iter().enumerate() {
        cum += c.1 as f64;
        if cum >= target {
            cut = i + 1;
            break;
        }
    }
    let nucleus = &cand[..cut.max(1)];
    let total: f64 = nucleus.iter().map(|c| c.1 as f64).sum();
    let mut r = rng.gen::<f64>() * total;
    for c in nucleus {
        r -= c.1 as f64;
        if r <= 0.0 {
            return c.0;
        }
    }
    nucleus.last().unwrap().0
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}
