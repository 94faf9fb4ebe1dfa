//! Fuzzing the GGUF reader (header, metadata, tensor table) and the model loader behind it with
//! mutations of a tiny model file: every case is loaded or refused with one error naming the
//! file; no panic, no allocation over 64 MiB (a 2^60 length field never allocates). Case counts
//! are printed (`cargo nextest run --no-capture -E 'test(fuzz)'`) and quoted in docs/security.md.

#[path = "support/fuzz.rs"]
mod fuzz;

#[global_allocator]
static ALLOC: fuzz::Counting = fuzz::Counting;

use candle_core::Device;
use deepguard_runtime::gguf::GgufFile;
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use candle_core::quantized::gguf_file::{self, Value};
use fuzz::{fuzz, gguf_fields, mutated};

fn seed_file(dir: &std::path::Path) -> Vec<u8> {
    let p = dir.join("seed.gguf");
    TinySpec { hidden: 32, intermediate: 64, layers: 2, ..TinySpec::qwen2() }.write_gguf(&p).unwrap();
    std::fs::read(p).unwrap()
}

/// Opens, validates and reads every tensor of one candidate file.
fn open_all(p: &std::path::Path) -> anyhow::Result<()> {
    let mut g = GgufFile::open(p)?;
    let _ = g.fingerprint();
    let _ = g.dtype_histogram();
    let cfg = g.config();
    let names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
    for n in names {
        g.tensor(&n, &Device::Cpu)?;
    }
    cfg.map(|_| ())
}

#[test]
fn fuzz_gguf_header_metadata_and_tensor_table() {
    let d = tempfile::tempdir().unwrap();
    let seed = seed_file(d.path());
    let fields = gguf_fields(&seed);
    assert!(fields.len() > 40, "the walker found the length fields ({})", fields.len());
    let p = d.path().join("case.gguf");
    let s = fuzz("gguf-header", 2000, 0x6775_6766, mutated(seed, fields), "case.gguf", |b| {
        std::fs::write(&p, b)?;
        open_all(&p)
    });
    assert!(s.rejected > 0 && s.accepted > 0, "{s:?}");
}

#[test]
fn fuzz_gguf_model_load() {
    let d = tempfile::tempdir().unwrap();
    let seed = seed_file(d.path());
    let fields = gguf_fields(&seed);
    let p = d.path().join("case.gguf");
    fuzz("gguf-model", 600, 0x6d6f_64656c, mutated(seed, fields), "case.gguf", |b| {
        std::fs::write(&p, b)?;
        let m = Model::load(&p, &Device::Cpu)?;
        let ids = m.tokenizer.encode("def f(x):\n    return x")?;
        let _ = m.tokenizer.decode(&ids)?;
        Ok(())
    });
}

/// Every length, count, dimension and offset field of the file set to 2^60, 2^32 and u64::MAX
/// in turn: refused with one error naming the file, without a large allocation.
#[test]
fn fuzz_gguf_every_length_field_set_huge() {
    let d = tempfile::tempdir().unwrap();
    let seed = seed_file(d.path());
    let fields = gguf_fields(&seed);
    let p = d.path().join("huge.gguf");
    let values = [1u64 << 60, 1 << 32, u64::MAX];
    let cases: Vec<(usize, u64)> = fields.iter().flat_map(|&f| values.iter().map(move |&v| (f, v))).collect();
    let n = cases.len() as u32;
    let strategy = proptest::sample::select(cases);
    // Drawn at random from the full list; with this many cases nearly every pair is drawn.
    fuzz("gguf-huge-fields", n * 2, 0x2_60, strategy, "huge.gguf", |&(at, v)| {
        let mut b = seed.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        std::fs::write(&p, &b)?;
        open_all(&p)?;
        Model::load(&p, &Device::Cpu).map(|_| ())
    });
}

/// The seed file with its metadata edited (tensors kept), written back as GGUF.
fn with_metadata(seed: &std::path::Path, edit: impl Fn(&mut std::collections::HashMap<String, Value>)) -> Vec<u8> {
    let mut f = std::fs::File::open(seed).unwrap();
    let size = f.metadata().unwrap().len();
    let c = deepguard_runtime::gguf::read_content(&mut std::io::BufReader::new(&mut f), size).unwrap();
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = names.iter().map(|n| ((*n).clone(), c.tensor(&mut f, n, &Device::Cpu).unwrap())).collect();
    let mut md = c.metadata.clone();
    edit(&mut md);
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md_refs, &t_refs).unwrap();
    out.into_inner()
}

/// Hostile values that a byte mutation rarely produces, each refused with one error naming the
/// file: a zero alignment (a division by zero in candle's own reader), sizes that would make
/// the loader allocate (context length, head size, layer count, vocabulary), token ids outside
/// the vocabulary, a negative count.
#[test]
fn gguf_known_hostile_metadata_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let seed = d.path().join("seed.gguf");
    TinySpec { hidden: 32, intermediate: 64, layers: 2, ..TinySpec::qwen2() }.write_gguf(&seed).unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("general.alignment", Value::U32(0), "alignment"),
        ("general.alignment", Value::I32(-32), "alignment"),
        ("qwen2.context_length", Value::U64(1 << 40), "context_length"),
        ("qwen2.context_length", Value::U32(0), "zero"),
        ("qwen2.attention.key_length", Value::U64(1 << 60), "head_dim"),
        ("qwen2.block_count", Value::U64(1 << 40), "n_layers"),
        ("qwen2.block_count", Value::I32(-1), "n_layers"),
        ("qwen2.embedding_length", Value::U64(1 << 33), "hidden_size"),
        ("qwen2.feed_forward_length", Value::U64(1 << 60), "intermediate_size"),
        ("qwen2.attention.head_count", Value::U32(0), "zero"),
        ("qwen2.rope.freq_base", Value::F32(f32::NAN), "rope_theta"),
        ("tokenizer.ggml.eos_token_id", Value::U32(1 << 20), "outside the vocabulary"),
        ("tokenizer.ggml.bos_token_id", Value::U64((1 << 32) + 1), "outside the vocabulary"),
    ];
    let p = d.path().join("hostile.gguf");
    for (key, value, expect) in cases {
        std::fs::write(&p, with_metadata(&seed, |md| {
            md.insert(key.to_string(), value.clone());
        }))
        .unwrap();
        let e = Model::load(&p, &Device::Cpu).err().unwrap_or_else(|| panic!("{key} = {value:?} was accepted"));
        let msg = format!("{e:#}");
        assert!(msg.contains("hostile.gguf") && msg.contains(expect) && !msg.contains('\n'), "{key} = {value:?}: {msg}");
    }
}
