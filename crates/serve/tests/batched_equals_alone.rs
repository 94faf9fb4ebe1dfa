//! Continuous batching changes nothing in a request's output: every request decoded in a mixed
//! batch (others joining and leaving mid-way, prompts read in chunks next to other requests'
//! decoding, different methods side by side: plain, adapters + logit bias, a steering vector)
//! gets exactly the samples `generate` gives it alone with the same seed.

use candle_core::{Device, Tensor};
use deepguard_runtime::generate::{generate, FinishReason, Guidance, SamplingParams};
use deepguard_runtime::hooks::{AddBias, AddVector, LogitsProcessor};
use deepguard_runtime::lora::{LoraConfig, Proj};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use deepguard_serve::engine::{Engine, EngineConfig, Event, Job, Prepared};
use deepguard_serve::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which guidance a request gets.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    /// Adapters on, plus a logit bias.
    Guarded,
    Steered,
    Both,
}

struct Fixtures {
    bias: Vec<f32>,
    vector: Tensor,
    layer: usize,
    stop_ids: Vec<u32>,
}

struct NoEos(Vec<u32>);
impl LogitsProcessor for NoEos {
    fn process(&mut self, _: usize, _: usize, l: &mut [f32]) -> anyhow::Result<()> {
        for &t in &self.0 {
            l[t as usize] = f32::NEG_INFINITY;
        }
        Ok(())
    }
}

fn guidance(f: &Fixtures, kind: Kind, no_eos: bool, prompt_len: usize) -> Guidance<'static> {
    let mut g = Guidance::default();
    if matches!(kind, Kind::Steered | Kind::Both) {
        g.hooks.push(Box::new(AddVector::new(f.layer, &f.vector, 3.0, prompt_len - 1).unwrap()));
    }
    if matches!(kind, Kind::Guarded | Kind::Both) {
        g.processors.push(Box::new(AddBias { bias: f.bias.clone() }));
    }
    if no_eos {
        g.processors.push(Box::new(NoEos(f.stop_ids.clone())));
    }
    g
}

fn lora(kind: Kind) -> bool {
    matches!(kind, Kind::Guarded | Kind::Both)
}

/// Small deterministic noise.
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// Attaches adapters with non-zero B to q and v of every block (a stand-in for a trained guard).
fn attach_random_lora(m: &mut Model) {
    let cfg = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: vec![Proj::QProj, Proj::VProj], layers: vec![], seed: 3 };
    for (i, (name, var)) in m.decoder.attach_lora(&cfg).unwrap().into_iter().enumerate() {
        if name.ends_with("lora_B.weight") {
            let n = var.elem_count();
            var.set(&Tensor::from_vec(noise(n, 100 + i as u64, 0.2), var.dims(), &Device::Cpu).unwrap()).unwrap();
        }
    }
}

struct Req {
    prompt: Vec<u32>,
    params: SamplingParams,
    kind: Kind,
    no_eos: bool,
    /// Submitted once this many events of earlier requests have arrived (joins mid-way).
    after_events: usize,
}

/// What a request got back: text, finish reason and token count per sample.
type Outcome = Vec<(String, FinishReason, usize)>;

fn check(plain: &Model, guarded: Arc<Model>, reqs: Vec<Req>, f: Arc<Fixtures>, cfg: EngineConfig) {
    // Alone, first (the engine then owns the compute).
    let alone: Vec<Outcome> = reqs
        .iter()
        .map(|r| {
            let model = if lora(r.kind) { &*guarded } else { plain };
            let mut g = guidance(&f, r.kind, r.no_eos, r.prompt.len());
            let out = generate(model, &r.prompt, &r.params, &mut g, &mut |_, _| {}).unwrap();
            out.samples.into_iter().map(|s| (s.text, s.finish_reason, s.tokens.len())).collect()
        })
        .collect();

    let engine = Engine::spawn(guarded.clone(), cfg, Arc::new(Metrics::default()));
    let mut rxs = Vec::new();
    let mut seen = 0usize;
    let mut got: Vec<Option<Outcome>> = vec![None; reqs.len()];
    let mut parts: Vec<Outcome> = reqs.iter().map(|r| vec![(String::new(), FinishReason::Length, 0); r.params.n]).collect();
    let mut submitted = 0;
    let t0 = Instant::now();
    let mut max_active = 0;
    while got.iter().any(Option::is_none) {
        while submitted < reqs.len() && reqs[submitted].after_events <= seen {
            let r = &reqs[submitted];
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (f2, kind, no_eos) = (f.clone(), r.kind, r.no_eos);
            let prepare = Box::new(move |_m: &Model, ids: &[u32]| Ok(Prepared { guidance: guidance(&f2, kind, no_eos, ids.len()), lora: lora(kind), report: serde_json::json!({}) }));
            engine.submit(Job { prompt: r.prompt.clone(), params: r.params.clone(), prepare, events: tx, arrived: Instant::now(), deadline: None }).ok().unwrap();
            rxs.push(rx);
            submitted += 1;
        }
        let mut progressed = false;
        for (i, rx) in rxs.iter_mut().enumerate() {
            while let Ok(e) = rx.try_recv() {
                progressed = true;
                seen += 1;
                match e {
                    Event::Text { sample, delta } => parts[i][sample].0.push_str(&delta),
                    Event::Finished { sample, reason, tokens } => {
                        parts[i][sample].1 = reason;
                        parts[i][sample].2 = tokens;
                    }
                    Event::Done { .. } => got[i] = Some(parts[i].clone()),
                    Event::Failed { message, .. } => panic!("request {i} failed: {message}"),
                    Event::Started { .. } => {}
                }
            }
        }
        max_active = max_active.max(engine.metrics.active_requests.load(std::sync::atomic::Ordering::Relaxed));
        assert!(t0.elapsed() < Duration::from_secs(300), "the engine did not finish");
        if !progressed {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    engine.drain(Duration::ZERO);
    engine.join();
    assert!(max_active >= 3, "requests were not batched together (at most {max_active} at once)");
    for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
        assert_eq!(Some(a), b.as_ref(), "request {i} ({:?}, n = {}, T = {}) differs from its run alone", reqs[i].kind, reqs[i].params.n, reqs[i].params.temperature);
    }
}

fn requests(vocab: usize, long: usize) -> Vec<Req> {
    let prompt = |len: usize, seed: u64| -> Vec<u32> { noise(len, seed, 2.0).iter().map(|x| ((x + 1.0) * 1e4) as u32 % vocab as u32).collect() };
    let kinds = [Kind::Plain, Kind::Guarded, Kind::Steered, Kind::Both];
    (0..9)
        .map(|i| {
            let kind = kinds[i % 4];
            let n = [1, 2, 1, 3][i % 4];
            let temperature = if i % 3 == 0 { 0.0 } else { 0.9 };
            let max_tokens = long / 2 + (i * 7) % long;
            let params = SamplingParams { temperature, top_p: 0.95, seed: 1000 + i as u64, max_tokens, stop: vec![], n };
            // three at once, the rest joining while those decode
            let after_events = if i < 3 { 0 } else { 4 + 3 * i };
            Req { prompt: prompt(3 + (i * 11) % 29, i as u64), params, kind, no_eos: i % 2 == 0, after_events }
        })
        .collect()
}

#[test]
fn tiny_model_mixed_methods_and_arrivals() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.gguf");
    TinySpec { context: 256, ..TinySpec::qwen2() }.write_gguf(&p).unwrap();
    let plain = Model::load(&p, &Device::Cpu).unwrap();
    let mut guarded = Model::load(&p, &Device::Cpu).unwrap();
    attach_random_lora(&mut guarded);
    let cfg = plain.cfg().clone();
    let f = Fixtures {
        bias: noise(cfg.vocab_size, 7, 4.0),
        vector: Tensor::from_vec(noise(cfg.hidden_size, 8, 2.0), cfg.hidden_size, &Device::Cpu).unwrap(),
        layer: 1,
        stop_ids: plain.tokenizer.stop_ids.iter().copied().collect(),
    };
    let reqs = requests(cfg.vocab_size, 24);
    // a small prefill budget: prompts are read in chunks next to other requests' decoding
    check(&plain, Arc::new(guarded), reqs, Arc::new(f), EngineConfig { max_batch: 7, prefill_chunk: 5 });
}

/// The same on a real model and its real kernels (SmolLM2-135M, Q4_1).
#[test]
fn smollm2_mixed_methods_and_arrivals() {
    let path = deepguard_runtime::models::resolve("smollm2-135m").expect("SmolLM2-135M is needed (scripts/fetch_models.py smollm2-135m, or DEEPGUARD_MODELS)");
    let plain = Model::load(&path, &Device::Cpu).unwrap();
    let mut guarded = Model::load(&path, &Device::Cpu).unwrap();
    attach_random_lora(&mut guarded);
    let cfg = plain.cfg().clone();
    let f = Fixtures {
        bias: noise(cfg.vocab_size, 7, 3.0),
        vector: Tensor::from_vec(noise(cfg.hidden_size, 8, 1.0), cfg.hidden_size, &Device::Cpu).unwrap(),
        layer: cfg.n_layers / 2,
        stop_ids: plain.tokenizer.stop_ids.iter().copied().collect(),
    };
    let reqs = requests(cfg.vocab_size, 12);
    check(&plain, Arc::new(guarded), reqs, Arc::new(f), EngineConfig { max_batch: 6, prefill_chunk: 16 });
}
