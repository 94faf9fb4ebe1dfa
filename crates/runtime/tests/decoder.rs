//! Decoder behaviour on tiny random models written to real GGUF / safetensors files.

mod common;
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, IndexOp, Tensor, D};
use common::*;
use deepguard_runtime::decoder::{ForwardOpts, LayerSelect, LogitsSelect};
use deepguard_runtime::hooks::{AddVector, ResidualHook};
use deepguard_runtime::kv_cache::KvCache;
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;

fn all_logits(m: &Model, toks: &[u32]) -> Tensor {
    let o = ForwardOpts { logits: LogitsSelect::All, ..ForwardOpts::inference() };
    m.decoder.forward(&ids(toks), 0, None, &o).unwrap().logits.unwrap().squeeze(0).unwrap()
}

/// Our decoder must give the same logits as candle-transformers' stock quantized models on the
/// same GGUF file.
#[test]
fn parity_with_candle_transformers_llama_and_qwen2() {
    for spec in [TinySpec::llama(), TinySpec::qwen2(), TinySpec { dtype: GgmlDType::Q4_0, ..TinySpec::llama() }] {
        let (_d, path) = tiny_gguf(&spec);
        let ours = Model::load(&path, &Device::Cpu).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let input = ids(PROMPT);
        let theirs = match spec.arch {
            deepguard_runtime::Arch::Llama => {
                let mut m = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
                m.forward(&input, 0).unwrap()
            }
            deepguard_runtime::Arch::Qwen2 => {
                let mut m = candle_transformers::models::quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
                m.forward(&input, 0).unwrap()
            }
        };
        let mine = ours.decoder.forward(&input, 0, None, &ForwardOpts::inference()).unwrap().logits.unwrap();
        let theirs = theirs.reshape(mine.shape()).unwrap();
        let diff = max_abs_diff(&mine, &theirs);
        assert!(max_abs(&mine) > 0.1, "logits should not be trivially small");
        assert!(diff < 1e-4, "{:?}: max |ours - candle-transformers| = {diff}", spec.arch);
    }
}

/// Prefill + one-token-at-a-time decoding with the KV cache equals a full forward pass, also
/// when the prompt is fed in chunks.
#[test]
fn kv_cache_decode_equals_full_forward() {
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let (_d, m) = load(&spec);
        let full = all_logits(&m, PROMPT);
        let mut cache = KvCache::new(spec.layers, 64);
        let opts = ForwardOpts::inference();
        let split = 4;
        let first = m.decoder.forward(&ids(&PROMPT[..split]), 0, Some(&mut cache), &opts).unwrap().logits.unwrap();
        assert!(max_abs_diff(&first.squeeze(0).unwrap(), &full.i(split - 1).unwrap()) < 1e-4);
        // a chunk of 3, then single tokens
        let chunk = m.decoder.forward(&ids(&PROMPT[split..split + 3]), split, Some(&mut cache), &opts).unwrap().logits.unwrap();
        assert!(max_abs_diff(&chunk.squeeze(0).unwrap(), &full.i(split + 2).unwrap()) < 1e-4);
        for pos in split + 3..PROMPT.len() {
            let l = m.decoder.forward(&ids(&PROMPT[pos..pos + 1]), pos, Some(&mut cache), &opts).unwrap().logits.unwrap();
            let d = max_abs_diff(&l.squeeze(0).unwrap(), &full.i(pos).unwrap());
            assert!(d < 1e-4, "{:?} position {pos}: cached decode differs by {d}", spec.arch);
        }
        assert_eq!(cache.len(), PROMPT.len());
    }
}

/// A batch of identical rows decodes to identical logits, equal to the batch-1 result, and
/// dropping rows from the cache keeps the survivors exact.
#[test]
fn batched_cache_rows_match_single_stream() {
    let (_d, m) = load(&TinySpec::qwen2());
    let full = all_logits(&m, &[PROMPT, &[9, 8]].concat());
    let opts = ForwardOpts::inference();
    let mut cache = KvCache::new(3, 32);
    m.decoder.forward(&ids(PROMPT), 0, Some(&mut cache), &opts).unwrap();
    cache.expand_batch(3).unwrap();
    let p = PROMPT.len();
    // rows 0 and 2 get token 9, row 1 gets 4
    let step = Tensor::new(&[[9u32], [4], [9]], &Device::Cpu).unwrap();
    let l = m.decoder.forward(&step, p, Some(&mut cache), &opts).unwrap().logits.unwrap();
    assert!(max_abs_diff(&l.i(0).unwrap(), &full.i(p).unwrap()) < 1e-4);
    assert!(max_abs_diff(&l.i(2).unwrap(), &full.i(p).unwrap()) < 1e-4);
    assert!(max_abs_diff(&l.i(1).unwrap(), &l.i(0).unwrap()) > 1e-3, "a different token must give different logits");
    cache.retain_rows(&[0, 2], &Device::Cpu).unwrap();
    let step = Tensor::new(&[[8u32], [8]], &Device::Cpu).unwrap();
    let l = m.decoder.forward(&step, p + 1, Some(&mut cache), &opts).unwrap().logits.unwrap();
    for r in 0..2 {
        assert!(max_abs_diff(&l.i(r).unwrap(), &full.i(p + 1).unwrap()) < 1e-4);
    }
}

#[test]
fn hidden_states_count_shapes_and_consistency() {
    let spec = TinySpec::qwen2();
    let (_d, m) = load(&spec);
    let t = PROMPT.len();
    let o = ForwardOpts { keep: LayerSelect::All, keep_final_norm: true, logits: LogitsSelect::All, ..ForwardOpts::inference() };
    let out = m.decoder.forward(&ids(PROMPT), 0, None, &o).unwrap();
    assert_eq!(out.hidden.len(), spec.layers);
    for (l, h) in &out.hidden {
        assert_eq!(h.dims(), &[1, t, spec.hidden], "layer {l}");
    }
    let fin = out.final_norm.unwrap();
    assert_eq!(fin.dims(), &[1, t, spec.hidden]);
    // final norm is RMSNorm of the last block's output; logits are the head applied to it
    let last = &out.hidden[&(spec.layers - 1)];
    let rms = (last.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap().sqrt().unwrap();
    let manual = last.broadcast_div(&rms).unwrap().broadcast_mul(&m.decoder.norm).unwrap();
    assert!(max_abs_diff(&manual, &fin) < 1e-4);
    let head = m.decoder.lm_head.forward(&fin, &o).unwrap();
    assert!(max_abs_diff(&head, out.logits.as_ref().unwrap()) < 1e-4);
    // layers differ from each other
    assert!(max_abs_diff(&out.hidden[&0], &out.hidden[&1]) > 1e-2);

    let o = ForwardOpts { keep: LayerSelect::Only(vec![0, 2]), logits: LogitsSelect::None, ..ForwardOpts::inference() };
    let out2 = m.decoder.forward(&ids(PROMPT), 0, None, &o).unwrap();
    assert_eq!(out2.hidden.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
    assert!(out2.logits.is_none() && out2.final_norm.is_none());
    assert!(max_abs_diff(&out2.hidden[&2], &out.hidden[&2]) < 1e-6);
}

/// The differentiable path (primitive ops, dense weights) computes the same function as the
/// fused inference path.
#[test]
fn grad_mode_matches_inference_mode() {
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let (_d, mut m) = load(&TinySpec { dtype: GgmlDType::F32, ..spec.clone() });
        let fused = all_logits(&m, PROMPT);
        m.decoder.prepare_for_training(0).unwrap();
        let o = ForwardOpts { logits: LogitsSelect::All, grad: true, ..ForwardOpts::inference() };
        let diff_path = m.decoder.forward(&ids(PROMPT), 0, None, &o).unwrap().logits.unwrap().squeeze(0).unwrap();
        let d = max_abs_diff(&fused, &diff_path);
        assert!(d < 1e-3, "{:?}: grad-mode logits differ by {d}", spec.arch);
    }
}

/// GGUF and Hugging Face folders of the same weights give the same logits. For llama this checks
/// the RoPE convention: GGUF stores q/k permuted for interleaved pairs, HF uses rotate-half.
#[test]
fn hf_folder_matches_gguf() {
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let spec = TinySpec { dtype: GgmlDType::F32, ..spec };
        let (_d, g) = load(&spec);
        let dir = tempfile::tempdir().unwrap();
        spec.write_hf(dir.path()).unwrap();
        let h = Model::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(h.cfg().n_layers, spec.layers);
        let d = max_abs_diff(&all_logits(&g, PROMPT), &all_logits(&h, PROMPT));
        assert!(d < 1e-3, "{:?}: HF vs GGUF logits differ by {d}", spec.arch);
        assert_eq!(g.tokenizer.encode("def f(x): return x").unwrap(), h.tokenizer.encode("def f(x): return x").unwrap());
    }
}

/// The steering hook adds alpha * v exactly at positions >= from_pos of its layer and nowhere else.
#[test]
fn residual_hook_edits_only_chosen_layer_and_positions() {
    let spec = TinySpec::llama();
    let (_d, m) = load(&spec);
    let v = Tensor::rand(-1f32, 1f32, spec.hidden, &Device::Cpu).unwrap();
    let alpha = 2.5;
    let layer = 1;
    let from = 6;
    let hook = AddVector::new(layer, &v, alpha, from).unwrap();
    let keep = ForwardOpts { keep: LayerSelect::All, logits: LogitsSelect::All, ..ForwardOpts::inference() };
    let base = m.decoder.forward(&ids(PROMPT), 0, None, &keep).unwrap();
    let hooks: [&dyn ResidualHook; 1] = [&hook];
    let steered = m.decoder.forward(&ids(PROMPT), 0, None, &ForwardOpts { hooks: &hooks, ..keep.clone() }).unwrap();
    // layers below: unchanged
    assert!(max_abs_diff(&base.hidden[&0], &steered.hidden[&0]) == 0.0);
    // the hooked layer: exactly alpha*v at positions >= from, zero before
    let delta = (&steered.hidden[&layer] - &base.hidden[&layer]).unwrap().squeeze(0).unwrap();
    let expected = (&v * alpha).unwrap();
    for p in 0..PROMPT.len() {
        let row = delta.i(p).unwrap();
        if p < from {
            assert_eq!(max_abs(&row), 0.0, "position {p} must be untouched");
        } else {
            assert!(max_abs_diff(&row, &expected) < 1e-5, "position {p} must move by alpha*v");
        }
    }
    // positions before `from` are causally unaffected downstream too; later ones change
    let lb = base.logits.unwrap().squeeze(0).unwrap();
    let ls = steered.logits.unwrap().squeeze(0).unwrap();
    assert_eq!(max_abs_diff(&lb.i(from - 1).unwrap(), &ls.i(from - 1).unwrap()), 0.0);
    assert!(max_abs_diff(&lb.i(from).unwrap(), &ls.i(from).unwrap()) > 1e-3);
    // during cached decoding (positions beyond the prompt) the hook applies at every step
    let mut cache = KvCache::new(spec.layers, 32);
    let o = ForwardOpts { hooks: &hooks, keep: LayerSelect::Only(vec![layer]), ..ForwardOpts::inference() };
    m.decoder.forward(&ids(PROMPT), 0, Some(&mut cache), &o).unwrap();
    let s = m.decoder.forward(&ids(&[4]), PROMPT.len(), Some(&mut cache), &o).unwrap();
    let mut c2 = KvCache::new(spec.layers, 32);
    let o2 = ForwardOpts { hooks: &hooks, keep: LayerSelect::Only(vec![layer]), logits: LogitsSelect::None, ..ForwardOpts::inference() };
    let full = m.decoder.forward(&ids(&[PROMPT, &[4]].concat()), 0, Some(&mut c2), &o2).unwrap();
    let last_full = full.hidden[&layer].i((0, PROMPT.len())).unwrap();
    assert!(max_abs_diff(&s.hidden[&layer].i((0, 0)).unwrap(), &last_full) < 1e-4);
}

/// A ragged batch (a prompt read in two chunks next to a 2-row request decoding with a steering
/// hook) gives every segment bit for bit the logits of its own forward passes alone.
#[test]
fn ragged_batch_equals_each_segment_alone() {
    use deepguard_runtime::decoder::Segment;
    let spec = TinySpec::qwen2();
    let (_d, m) = load(&spec);
    let opts = ForwardOpts::inference();
    let v = Tensor::rand(-1f32, 1f32, spec.hidden, &Device::Cpu).unwrap();
    let hook = AddVector::new(1, &v, 2.0, 3).unwrap();
    let hooks: [&dyn ResidualHook; 1] = [&hook];
    let steer = ForwardOpts { hooks: &hooks, ..opts.clone() };
    let exact = |a: &Tensor, b: &Tensor| assert_eq!(max_abs_diff(a, b), 0.0);

    // alone: request A (2 rows after a shared 4-token prompt, steered) decodes two steps;
    // request B reads a 7-token prompt at once
    let mut ca = KvCache::new(spec.layers, 16);
    m.decoder.forward(&ids(&PROMPT[..4]), 0, Some(&mut ca), &steer).unwrap();
    ca.expand_batch(2).unwrap();
    let a1 = m.decoder.forward(&Tensor::new(&[[5u32], [6]], &Device::Cpu).unwrap(), 4, Some(&mut ca), &steer).unwrap().logits.unwrap();
    let a2 = m.decoder.forward(&Tensor::new(&[[7u32], [8]], &Device::Cpu).unwrap(), 5, Some(&mut ca), &steer).unwrap().logits.unwrap();
    let mut cb = KvCache::new(spec.layers, 16);
    let b = m.decoder.forward(&ids(&PROMPT[4..]), 0, Some(&mut cb), &opts).unwrap().logits.unwrap();

    // together: B's prompt in chunks of 3 and 4 tokens, beside A's two decode steps
    let mut ra = KvCache::new(spec.layers, 16);
    m.decoder.forward(&ids(&PROMPT[..4]), 0, Some(&mut ra), &steer).unwrap();
    ra.expand_batch(2).unwrap();
    let mut rb = KvCache::new(spec.layers, 16);
    let step = |ids: &[u32], a: &mut KvCache, b: &mut KvCache, bt: usize, b_logits: bool| {
        let mut segs = [
            Segment { cache: a, rows: 2, t: 1, hooks: &hooks, lora: true, logits: true },
            Segment { cache: b, rows: 1, t: bt, hooks: &[], lora: true, logits: b_logits },
        ];
        m.decoder.forward_ragged(ids, &mut segs).unwrap()
    };
    let out = step(&[5, 6, PROMPT[4], PROMPT[5], PROMPT[6]], &mut ra, &mut rb, 3, false);
    exact(out[0].as_ref().unwrap(), &a1);
    assert!(out[1].is_none());
    let out = step(&[7, 8, PROMPT[7], PROMPT[8], PROMPT[9], PROMPT[10]], &mut ra, &mut rb, 4, true);
    exact(out[0].as_ref().unwrap(), &a2);
    exact(out[1].as_ref().unwrap(), &b);
    assert_eq!((ra.len(), rb.len()), (6, 7));
}
