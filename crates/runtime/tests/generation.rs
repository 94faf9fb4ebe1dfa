//! Generation: greedy determinism and correctness, batched sampling, seeds, stop strings, limits.

mod common;
use common::*;
use deepguard_runtime::decoder::{ForwardOpts, LogitsSelect};
use deepguard_runtime::generate::{generate, sample_token, FinishReason, Guidance, SamplingParams};
use deepguard_runtime::hooks::{AddBias, LogitsProcessor};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use rand::SeedableRng;

fn gen(m: &Model, p: &SamplingParams) -> deepguard_runtime::generate::Generation {
    generate(m, PROMPT, p, &mut Guidance::default(), &mut |_, _| {}).unwrap()
}

/// No end-of-sequence token, so runs have their full length.
struct NoEos(Vec<u32>);
impl LogitsProcessor for NoEos {
    fn process(&mut self, _: usize, _: usize, l: &mut [f32]) -> anyhow::Result<()> {
        for &t in &self.0 {
            l[t as usize] = f32::NEG_INFINITY;
        }
        Ok(())
    }
}

#[test]
fn greedy_equals_argmax_of_full_forward_and_is_deterministic() {
    let (_d, m) = load(&TinySpec::qwen2());
    let p = SamplingParams { max_tokens: 8, ..Default::default() };
    let mut g = Guidance::default();
    g.processors.push(Box::new(NoEos(m.tokenizer.stop_ids.iter().copied().collect())));
    let a = generate(&m, PROMPT, &p, &mut g, &mut |_, _| {}).unwrap();
    let b = generate(&m, PROMPT, &p, &mut g, &mut |_, _| {}).unwrap();
    assert_eq!(a.samples[0].tokens, b.samples[0].tokens);
    assert_eq!(a.samples[0].tokens.len(), 8);
    assert_eq!(a.samples[0].finish_reason, FinishReason::Length);
    // recompute with full forward passes, no cache
    let mut seq = PROMPT.to_vec();
    for _ in 0..8 {
        let o = ForwardOpts { logits: LogitsSelect::Last, ..ForwardOpts::inference() };
        let mut l = m.decoder.forward(&ids(&seq), 0, None, &o).unwrap().logits.unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        for &t in &m.tokenizer.stop_ids {
            l[t as usize] = f32::NEG_INFINITY;
        }
        seq.push(deepguard_runtime::generate::argmax(&l));
    }
    assert_eq!(&seq[PROMPT.len()..], a.samples[0].tokens.as_slice());
}

#[test]
fn batched_samples_differ_are_seeded_and_match_single_stream() {
    let (_d, m) = load(&TinySpec::llama());
    let p = SamplingParams { n: 10, temperature: 0.8, top_p: 0.95, max_tokens: 12, seed: 7, ..Default::default() };
    let a = gen(&m, &p);
    assert_eq!(a.samples.len(), 10);
    let distinct: std::collections::HashSet<_> = a.samples.iter().map(|s| s.tokens.clone()).collect();
    assert!(distinct.len() >= 8, "only {} distinct samples of 10", distinct.len());
    let b = gen(&m, &p);
    assert_eq!(a.samples.iter().map(|s| &s.tokens).collect::<Vec<_>>(), b.samples.iter().map(|s| &s.tokens).collect::<Vec<_>>());
    let c = gen(&m, &SamplingParams { seed: 8, ..p.clone() });
    assert_ne!(a.samples[0].tokens, c.samples[0].tokens);
    // sample 0 of the batch uses the same RNG stream as a single-sample run: identical tokens
    let single = gen(&m, &SamplingParams { n: 1, ..p.clone() });
    assert_eq!(single.samples[0].tokens, a.samples[0].tokens);
    // Every sample i draws from the stream seeded seed + i * 0x9E3779B97F4A7C15, whichever thread
    // samples its row: a single run with that seed reproduces it.
    for (i, s) in a.samples.iter().enumerate() {
        let seed = p.seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let one = gen(&m, &SamplingParams { n: 1, seed, ..p.clone() });
        assert_eq!(one.samples[0].tokens, s.tokens, "sample {i} of the batch differs from its single-stream run");
    }
    assert_eq!(a.generated_tokens, a.samples.iter().map(|s| s.tokens.len()).sum::<usize>());
}

#[test]
fn stop_strings_cut_the_text_and_streaming_matches() {
    let (_d, m) = load(&TinySpec::qwen2());
    let mut g = Guidance::default();
    g.processors.push(Box::new(NoEos(m.tokenizer.stop_ids.iter().copied().collect())));
    let p = SamplingParams { max_tokens: 20, ..Default::default() };
    let full = generate(&m, PROMPT, &p, &mut g, &mut |_, _| {}).unwrap().samples.remove(0).text;
    // pick a stop string from the middle of the greedy text
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 6, "tiny model produced too little text: {full:?}");
    let stop: String = chars[3..5].iter().collect();
    let cut = full.find(&stop).unwrap();
    let mut streamed = String::new();
    let out = generate(&m, PROMPT, &SamplingParams { stop: vec![stop.clone()], ..p }, &mut g, &mut |_, d| streamed.push_str(d)).unwrap();
    let s = &out.samples[0];
    assert_eq!(s.finish_reason, FinishReason::Stop);
    assert_eq!(s.text, full[..cut]);
    assert_eq!(streamed, s.text, "streamed deltas concatenate to the final text");
}

#[test]
fn logits_processor_steers_choice() {
    let (_d, m) = load(&TinySpec::qwen2());
    let target = 42u32;
    let mut bias = vec![0f32; m.cfg().vocab_size];
    bias[target as usize] = 1e4;
    let mut g = Guidance::default();
    g.processors.push(Box::new(AddBias { bias }));
    let out = generate(&m, PROMPT, &SamplingParams { max_tokens: 3, ..Default::default() }, &mut g, &mut |_, _| {}).unwrap();
    assert_eq!(out.samples[0].tokens, vec![target; 3]);
}

#[test]
fn prompt_longer_than_context_is_refused_with_numbers() {
    let (_d, m) = load(&TinySpec::qwen2()); // context 256
    let long: Vec<u32> = (0..250).map(|i| (i % 200) as u32).collect();
    let err = generate(&m, &long, &SamplingParams { max_tokens: 10, ..Default::default() }, &mut Guidance::default(), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("250") && err.contains("256") && err.contains("10"), "{err}");
    let err = m.decoder.forward(&ids(&vec![1; 300]), 0, None, &ForwardOpts::inference()).unwrap_err().to_string();
    assert!(err.contains("300") && err.contains("256"), "{err}");
}

#[test]
fn nucleus_sampling_stays_in_the_nucleus() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // probabilities ~ 0.5, 0.3, 0.2 (and a long tail of tiny ones)
    let mut base = vec![-30f32; 1000];
    base[10] = (0.5f32).ln();
    base[20] = (0.3f32).ln();
    base[30] = (0.2f32).ln();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2000 {
        let mut l = base.clone();
        *seen.entry(sample_token(&mut l, 1.0, 0.75, &mut rng)).or_insert(0) += 1;
    }
    // nucleus for p = 0.75 is {10, 20}
    assert_eq!(seen.keys().copied().collect::<std::collections::BTreeSet<_>>(), [10u32, 20].into());
    let frac = seen[&10] as f64 / 2000.0;
    assert!((frac - 0.625).abs() < 0.05, "P(10 | nucleus) should be 0.5/0.8, got {frac}");
    let mut l = base.clone();
    assert_eq!(sample_token(&mut l, 0.0, 0.95, &mut rng), 10, "temperature 0 is greedy");
}
