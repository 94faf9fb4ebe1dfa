//! The decoder's numbers pinned bit for bit. Hidden states, final norm and logits of the tiny
//! Llama and Qwen2 models, from the batched path (a whole prompt; a steered prompt continued
//! with cached two-row decoding) and from the ragged path (the server's continuous batching),
//! are hashed and compared with the hashes in `tests/support/decoder_golden.txt`. A change to the
//! decoder that moves a single bit of these fails here; a refactor must not move any.
//!
//! The kernels run in their scalar form (`DEEPGUARD_KERNELS=scalar`, set before anything reads
//! it; this file holds one test so that nothing else in its process reads it first): the
//! figures are then the same on every x86-64-v3 CPU, whatever SIMD it has.
//!
//! After an intended change of the numbers, record new hashes with `DEEPGUARD_GOLDEN=write`
//! (the test then fails once, saying so) and say why in the commit.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use deepguard_runtime::decoder::{ForwardOpts, LayerSelect, LogitsSelect, Segment};
use deepguard_runtime::hooks::{AddVector, ResidualHook};
use deepguard_runtime::kernels::Isa;
use deepguard_runtime::kv_cache::KvCache;
use deepguard_runtime::testing::TinySpec;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn hash(t: &Tensor) -> String {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let mut h = Sha256::new();
    for x in v {
        h.update(x.to_le_bytes());
    }
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Every tensor the test pins, by name.
fn outputs(spec: &TinySpec, name: &str, got: &mut BTreeMap<String, String>) {
    let (_d, m) = load(spec);
    let mut put = |k: &str, t: &Tensor| {
        got.insert(format!("{name}.{k}"), hash(t));
    };

    // A whole prompt: every block's output, the final norm, the logits of every position.
    let o = ForwardOpts { keep: LayerSelect::All, keep_final_norm: true, logits: LogitsSelect::All, ..ForwardOpts::inference() };
    let out = m.decoder.forward(&ids(PROMPT), 0, None, &o).unwrap();
    assert_eq!(out.hidden.len(), spec.layers);
    for (l, h) in &out.hidden {
        put(&format!("prompt.hidden{l}"), h);
    }
    put("prompt.final_norm", out.final_norm.as_ref().unwrap());
    put("prompt.logits", out.logits.as_ref().unwrap());

    // Steered (a deterministic vector at block 1 from position 3), cached, two rows decoding.
    let v: Vec<f32> = (0..spec.hidden).map(|i| (i * 7 % 13) as f32 / 13.0 - 0.5).collect();
    let hook = AddVector::new(1, &Tensor::new(v, &Device::Cpu).unwrap(), 2.0, 3).unwrap();
    let hooks: [&dyn ResidualHook; 1] = [&hook];
    let steer = ForwardOpts { hooks: &hooks, keep: LayerSelect::All, ..ForwardOpts::inference() };
    let mut cache = KvCache::new(spec.layers, 32);
    let pre = m.decoder.forward(&ids(&PROMPT[..4]), 0, Some(&mut cache), &steer).unwrap();
    put("steered.prefill.logits", pre.logits.as_ref().unwrap());
    cache.expand_batch(2).unwrap();
    for (i, step) in [[5u32, 6], [7, 8]].iter().enumerate() {
        let x = Tensor::new(&[[step[0]], [step[1]]], &Device::Cpu).unwrap();
        let out = m.decoder.forward(&x, 4 + i, Some(&mut cache), &steer).unwrap();
        put(&format!("steered.decode{i}.hidden1"), &out.hidden[&1]);
        put(&format!("steered.decode{i}.logits"), out.logits.as_ref().unwrap());
    }

    // Ragged: a prompt read in chunks of 3 and 4 beside the steered request's two decode steps.
    let mut ra = KvCache::new(spec.layers, 32);
    let steer = ForwardOpts { hooks: &hooks, ..ForwardOpts::inference() };
    m.decoder.forward(&ids(&PROMPT[..4]), 0, Some(&mut ra), &steer).unwrap();
    ra.expand_batch(2).unwrap();
    let mut rb = KvCache::new(spec.layers, 32);
    for (i, (toks, bt)) in [(vec![5, 6, PROMPT[4], PROMPT[5], PROMPT[6]], 3), (vec![7, 8, PROMPT[7], PROMPT[8], PROMPT[9], PROMPT[10]], 4)].iter().enumerate() {
        let mut segs = [
            Segment { cache: &mut ra, rows: 2, t: 1, hooks: &hooks, lora: true, logits: true },
            Segment { cache: &mut rb, rows: 1, t: *bt, hooks: &[], lora: true, logits: true },
        ];
        let out = m.decoder.forward_ragged(toks, &mut segs).unwrap();
        put(&format!("ragged{i}.a.logits"), out[0].as_ref().unwrap());
        put(&format!("ragged{i}.b.logits"), out[1].as_ref().unwrap());
    }
}

#[test]
fn hidden_states_and_logits_match_the_recorded_bits() {
    std::env::set_var("DEEPGUARD_KERNELS", "scalar");
    assert_eq!(Isa::detect(), Isa::Scalar, "the kernels must run in their scalar form here");
    let mut got = BTreeMap::new();
    outputs(&TinySpec::llama(), "llama", &mut got);
    outputs(&TinySpec::qwen2(), "qwen2", &mut got);

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/decoder_golden.txt");
    let text: String = got.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    if std::env::var("DEEPGUARD_GOLDEN").as_deref() == Ok("write") {
        std::fs::write(&path, &text).unwrap();
        panic!("recorded {} hashes in {}; run again without DEEPGUARD_GOLDEN=write", got.len(), path.display());
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want: BTreeMap<String, String> = want.lines().filter_map(|l| l.split_once(' ')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(want.len(), got.len(), "{}: {} hashes recorded, {} computed", path.display(), want.len(), got.len());
    let moved: Vec<&String> = got.iter().filter(|(k, v)| want.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    assert!(moved.is_empty(), "these outputs differ from the bits recorded in {}: {moved:?}", path.display());
}
