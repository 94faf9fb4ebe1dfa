//! Integration tests on the real models installed by `scripts/fetch_models.py`. A missing model
//! fails the test with the command that installs it (never a silent pass).

mod common;
use candle_core::quantized::gguf_file;
use candle_core::Device;
use common::*;
use deepguard_runtime::chat::{self, Message};
use deepguard_runtime::decoder::{ForwardOpts, LayerSelect, LogitsSelect};
use deepguard_runtime::generate::{generate, Guidance, SamplingParams};
use deepguard_runtime::kv_cache::KvCache;
use deepguard_runtime::{models, Model};
use candle_core::IndexOp;

fn model_path(name: &str) -> std::path::PathBuf {
    models::resolve(name).unwrap_or_else(|e| panic!("{e:#}"))
}

const CODE: &str = "import sqlite3\n\ndef get_user(db, name):\n    cur = db.cursor()\n";

#[test]
fn smollm2_matches_candle_transformers_and_kv_cache() {
    let path = model_path("smollm2-135m");
    let m = Model::load(&path, &Device::Cpu).unwrap();
    let toks = m.tokenizer.encode(CODE).unwrap();
    let o = ForwardOpts { logits: LogitsSelect::All, keep: LayerSelect::All, ..ForwardOpts::inference() };
    let out = m.decoder.forward(&ids(&toks), 0, None, &o).unwrap();
    let all = out.logits.unwrap().squeeze(0).unwrap();
    let last = all.i(toks.len() - 1).unwrap();
    let reference = candle_reference(&path, &toks, false);
    check_close_quantized(&last, &reference, "SmolLM2");
    assert_eq!(out.hidden.len(), 30);
    assert_eq!(out.hidden[&29].dims(), &[1, toks.len(), 576]);
    // Cached decoding: quantized matmuls quantize their input to 8 bits, so summation-order
    // differences between the prefill (gemm) and decode (vector) attention can flip a rounding
    // step and drift slightly; the decoded token must still agree. With dense weights there is
    // no activation quantization and the cache must be exact.
    check_cache(&m, &toks, &all, false);
    let mut dense = m;
    dense.decoder.prepare_for_training(0).unwrap();
    let all_dense = dense.decoder.forward(&ids(&toks), 0, None, &o).unwrap().logits.unwrap().squeeze(0).unwrap();
    check_cache(&dense, &toks, &all_dense, true);
    // architecture parity without activation quantization: both sides with dense f32 weights
    let d = max_abs_diff(&all_dense.i(toks.len() - 1).unwrap(), &candle_reference(&path, &toks, true));
    assert!(d < 1e-3, "SmolLM2 dense: max |ours - candle-transformers| = {d}");
}

/// Last-position logits of candle-transformers' stock quantized model. With `dense`, candle
/// dequantizes every matrix to f32 (`CANDLE_DEQUANTIZE_ALL`, read once per thread when the first
/// matrix is built), so no activation quantization is involved.
fn candle_reference(path: &std::path::Path, toks: &[u32], dense: bool) -> candle_core::Tensor {
    let path = path.to_path_buf();
    let toks = toks.to_vec();
    std::thread::spawn(move || {
        if dense {
            std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
        }
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let arch = ct.metadata["general.architecture"].to_string().unwrap().clone();
        let input = ids(&toks);
        let l = if arch == "qwen2" {
            let mut m = candle_transformers::models::quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
            m.forward(&input, 0).unwrap()
        } else {
            let mut m = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
            m.forward(&input, 0).unwrap()
        };
        std::env::remove_var("CANDLE_DEQUANTIZE_ALL");
        l.flatten_all().unwrap()
    })
    .join()
    .unwrap()
}

/// Quantized models: each side quantizes activations to 8 bits before every matmul, so float
/// summation-order differences (our kernels vs candle's) can flip rounding steps and drift over
/// many layers. The prediction must agree and the logits stay within a few percent of their range.
fn check_close_quantized(ours: &candle_core::Tensor, theirs: &candle_core::Tensor, what: &str) {
    let d = max_abs_diff(ours, theirs);
    assert!(d < 0.05 * max_abs(theirs), "{what}: max |ours - candle-transformers| = {d}");
    assert_eq!(ours.argmax(0).unwrap().to_scalar::<u32>().unwrap(), theirs.argmax(0).unwrap().to_scalar::<u32>().unwrap(), "{what}: top-1 differs");
}

fn check_cache(m: &Model, toks: &[u32], all: &candle_core::Tensor, exact: bool) {
    let n = toks.len();
    for split in [1, 5, n - 3] {
        let mut cache = KvCache::new(m.cfg().n_layers, 64);
        m.decoder.forward(&ids(&toks[..split]), 0, Some(&mut cache), &ForwardOpts::inference()).unwrap();
        for p in split..split + 3 {
            let l = m.decoder.forward(&ids(&toks[p..p + 1]), p, Some(&mut cache), &ForwardOpts::inference()).unwrap().logits.unwrap();
            let l = l.squeeze(0).unwrap();
            let full = all.i(p).unwrap();
            let d = max_abs_diff(&l, &full);
            if exact {
                assert!(d < 1e-3, "dense: position {p} after a prefill of {split}: {d}");
            } else {
                assert!(d < 0.05 * max_abs(&full), "quantized: position {p}: {d}");
                assert_eq!(l.argmax(0).unwrap().to_scalar::<u32>().unwrap(), full.argmax(0).unwrap().to_scalar::<u32>().unwrap());
            }
        }
    }
}

#[test]
fn qwen_matches_candle_transformers_and_writes_code() {
    let path = model_path("qwen2.5-coder-0.5b");
    let m = Model::load(&path, &Device::Cpu).unwrap();
    // tokenizer: special tokens have Qwen's ids; text round-trips
    assert_eq!(m.tokenizer.encode("<|im_start|>").unwrap(), vec![151644]);
    assert_eq!(m.tokenizer.decode(&m.tokenizer.encode(CODE).unwrap()).unwrap(), CODE);
    let toks = m.tokenizer.encode(CODE).unwrap();
    let mine = m.decoder.forward(&ids(&toks), 0, None, &ForwardOpts::inference()).unwrap().logits.unwrap().squeeze(0).unwrap();
    check_close_quantized(&mine, &candle_reference(&path, &toks, false), "Qwen");
    // greedy continuation is deterministic and is code that uses the cursor
    let p = SamplingParams { max_tokens: 24, ..Default::default() };
    let a = generate(&m, &toks, &p, &mut Guidance::default(), &mut |_, _| {}).unwrap();
    let b = generate(&m, &toks, &p, &mut Guidance::default(), &mut |_, _| {}).unwrap();
    assert_eq!(a.samples[0].tokens, b.samples[0].tokens);
    assert!(a.samples[0].text.contains("cur.execute"), "unexpected continuation: {:?}", a.samples[0].text);
    // the chat template from the GGUF renders
    let s = chat::render(m.tokenizer.chat_template.as_deref(), &[Message::new("user", "hi")], "", "").unwrap();
    assert!(s.contains("<|im_start|>user\nhi<|im_end|>") && s.ends_with("<|im_start|>assistant\n"), "{s}");
    // architecture parity with dense f32 weights on both sides
    let mut dense = m;
    dense.decoder.prepare_for_training(0).unwrap();
    let mine = dense.decoder.forward(&ids(&toks), 0, None, &ForwardOpts::inference()).unwrap().logits.unwrap().squeeze(0).unwrap();
    let d = max_abs_diff(&mine, &candle_reference(&path, &toks, true));
    assert!(d < 1e-3, "Qwen dense: max |ours - candle-transformers| = {d}");
}
