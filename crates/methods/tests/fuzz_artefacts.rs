//! Fuzzing what deepguard reads from artefacts a user may download: control-vector GGUF files,
//! guard files (safetensors with a JSON metadata block), PEFT adapters (adapter_model.safetensors
//! + adapter_config.json) and SVEN / SafeCoder jsonl lines. Mutations of valid files made here;
//! every case loads (and attaches, for adapters) or is refused with one error naming the file,
//! with no panic and no allocation over 64 MiB. Case counts are printed.

#[path = "../../runtime/tests/support/fuzz.rs"]
mod fuzz;

#[global_allocator]
static ALLOC: fuzz::Counting = fuzz::Counting;

use candle_core::Device;
use deepguard_methods::aggregator::{Aggregator, LayerRef, Mode};
use deepguard_methods::analyzer::Analyzer;
use deepguard_methods::data::{self, OnMalformed};
use deepguard_methods::guard::{self, Guard};
use deepguard_methods::params::Params;
use deepguard_methods::steer::SteerVector;
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use fuzz::{fuzz, gguf_fields, json_mutated, mutated, safetensors_mutated};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

fn tiny(dir: &Path) -> Model {
    let p = dir.join("m.gguf");
    TinySpec { hidden: 32, intermediate: 64, ..TinySpec::llama() }.write_gguf(&p).unwrap();
    Model::load(&p, &Device::Cpu).unwrap()
}

/// A guard folder (guard.safetensors, adapter_model.safetensors, adapter_config.json) for `m`.
fn guard_folder(m: &mut Model, out: &Path) {
    let lc = deepguard_runtime::lora::LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: guard::default_targets(m.cfg().arch), layers: vec![1, 2], seed: 3 };
    let mut adapters = Params::default();
    for (k, v) in m.decoder.attach_lora(&lc).unwrap() {
        adapters.insert(k, v);
    }
    let (h, v) = (m.cfg().hidden_size, m.cfg().vocab_size);
    let layers = vec![LayerRef::Block(1), LayerRef::FinalNorm];
    let g = Guard {
        meta: guard::GuardMeta {
            model_fingerprint: m.info.fingerprint.clone(),
            model_arch: "llama".into(),
            n_layers: m.cfg().n_layers,
            hidden: h,
            vocab: v,
            aggregator: Mode::Attention,
            layers: layers.clone(),
            lora: Some(lc),
            prior_rule: "counts".into(),
            data_hash: String::new(),
            settings: serde_json::Value::Null,
            cwes: vec![],
        },
        aggregator: Aggregator::new(Mode::Attention, layers, h, 0, &Device::Cpu).unwrap(),
        analyzer: Analyzer::new(h, v, 0, &Device::Cpu).unwrap(),
        t_stats: vec![0.5; v],
        adapters: Default::default(),
    };
    g.save(out, m, &adapters).unwrap();
    m.decoder.detach_lora();
}

/// Loads the guard folder and attaches its adapters (then detaches them again).
fn load_guard(dir: &Path, m: &RefCell<Model>) -> anyhow::Result<()> {
    let g = Guard::load(dir, &m.borrow())?;
    let mut m = m.borrow_mut();
    let r = g.attach(&mut m);
    m.decoder.detach_lora();
    r.map_err(|e| e.context(format!("{}", dir.join(guard::GUARD_FILE).display())))
}

#[test]
fn fuzz_control_vector_gguf() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let h = m.cfg().hidden_size;
    let v = SteerVector {
        cwe: Some(deepguard_methods::data::Cwe::parse("CWE-89").unwrap()),
        layer: 1,
        direction: (0..h).map(|i| i as f32 / h as f32).collect(),
        model_arch: "llama".into(),
        model_fingerprint: m.info.fingerprint.clone(),
        n_layers: m.cfg().n_layers,
        hidden: h,
        n_pairs: 3,
        position: "last token".into(),
        probe: Some(deepguard_methods::probe::logreg::LogReg { w: vec![0.1; h], b: 0.2 }),
        centroid: vec![0.3; h],
    };
    let seed_path = d.path().join("seed.gguf");
    v.save(&seed_path).unwrap();
    let seed = std::fs::read(&seed_path).unwrap();
    let p = d.path().join("case.gguf");
    let s = fuzz("control-vector", 800, 0xc0_7ec, mutated(seed.clone(), gguf_fields(&seed)), "case.gguf", |b| {
        std::fs::write(&p, b)?;
        let v = SteerVector::load(&p)?;
        v.check_model(&m, &p)?;
        v.hook(4.0, 0).map_err(|e| e.context(p.display().to_string()))?;
        Ok(())
    });
    assert!(s.accepted > 0 && s.rejected > 0, "{s:?}");
}

#[test]
fn fuzz_guard_file() {
    let d = tempfile::tempdir().unwrap();
    let mut m = tiny(d.path());
    let dir = d.path().join("guard");
    guard_folder(&mut m, &dir);
    let gp = dir.join(guard::GUARD_FILE);
    let seed = std::fs::read(&gp).unwrap();
    let m = RefCell::new(m);
    {
        // The header rebuilt as the structure-aware target does, unedited, still loads.
        let n = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
        let h: serde_json::Value = serde_json::from_slice(&seed[8..8 + n]).unwrap();
        let hs = serde_json::to_vec(&h).unwrap();
        let mut b = (hs.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(&hs);
        b.extend_from_slice(&seed[8 + n..]);
        std::fs::write(&gp, b).unwrap();
        load_guard(&dir, &m).unwrap();
    }
    // Bytes anywhere (the 8-byte header length first of all), then the JSON header's numbers,
    // shapes and the `meta` block, structure-aware.
    fuzz("guard-bytes", 300, 0x6a_7264, mutated(seed.clone(), vec![0]), "guard.safetensors", |b| {
        std::fs::write(&gp, b)?;
        load_guard(&dir, &m)
    });
    fuzz("guard-header", 400, 0x6a_7265, safetensors_mutated(seed.clone()), "guard.safetensors", |b| {
        std::fs::write(&gp, b)?;
        load_guard(&dir, &m)
    });
    let n = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&seed[8..8 + n]).unwrap();
    let meta: serde_json::Value = serde_json::from_str(header["__metadata__"]["meta"].as_str().unwrap()).unwrap();
    let s = fuzz("guard-meta", 400, 0x6a_7266, json_mutated(meta), "guard.safetensors", |text| {
        let mut h = header.clone();
        h["__metadata__"]["meta"] = serde_json::Value::String(text.clone());
        let hs = serde_json::to_vec(&h)?;
        let mut b = (hs.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(&hs);
        b.extend_from_slice(&seed[8 + n..]);
        std::fs::write(&gp, b)?;
        load_guard(&dir, &m)
    });
    assert!(s.accepted > 0 && s.rejected > 0, "{s:?}");
}

#[test]
fn fuzz_peft_adapter() {
    let d = tempfile::tempdir().unwrap();
    let mut m = tiny(d.path());
    let dir = d.path().join("guard");
    guard_folder(&mut m, &dir);
    let ap = dir.join(guard::ADAPTER_FILE);
    let cp = dir.join(guard::ADAPTER_CONFIG);
    let (seed_a, seed_c) = (std::fs::read(&ap).unwrap(), std::fs::read(&cp).unwrap());
    let m = RefCell::new(m);
    let attach = |m: &RefCell<Model>| -> anyhow::Result<()> {
        let cfg = m.borrow().cfg().clone();
        let (lc, w) = guard::read_peft(&dir, &cfg)?;
        let mut m = m.borrow_mut();
        let r = guard::attach_adapters(&mut m, &lc, &w);
        m.decoder.detach_lora();
        r.map_err(|e| e.context(ap.display().to_string()))
    };
    fuzz("peft-safetensors-bytes", 300, 0xad_a7, mutated(seed_a.clone(), vec![0]), "adapter_model.safetensors", |b| {
        std::fs::write(&ap, b)?;
        attach(&m)
    });
    fuzz("peft-safetensors-header", 400, 0xad_a8, safetensors_mutated(seed_a.clone()), "adapter_model.safetensors", |b| {
        std::fs::write(&ap, b)?;
        attach(&m)
    });
    std::fs::write(&ap, &seed_a).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&seed_c).unwrap();
    // The config's numbers (rank, alpha, layers) size what is allocated: the errors name either
    // file (a rank that disagrees with the tensors is an adapter-file error).
    let s = fuzz("adapter_config.json", 800, 0xc0_4f19, json_mutated(config), "adapter_", |text| {
        std::fs::write(&cp, text)?;
        attach(&m)
    });
    assert!(s.accepted > 0 && s.rejected > 0, "{s:?}");
}

fn sven_line(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| panic!("{} not found (CI runs with ../shared beside the repo)", path.display()));
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

#[test]
fn fuzz_sven_and_safecoder_lines() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("case.jsonl");
    for (name, seed, cases) in [("sven-jsonl", shared.join("sven/val/cwe-089.jsonl"), 700u32), ("safecoder-jsonl", shared.join("safecoder/val/sec-new-desc.jsonl"), 700)] {
        let good = sven_line(&seed);
        let good_text = serde_json::to_string(&good).unwrap();
        let s = fuzz(name, cases, 0x5e_4e, json_mutated(good), "case.jsonl", |line| {
            // The mutated record between two good ones; with `refuse` it names the file and
            // line, with `skip` the good ones still load.
            std::fs::write(&p, format!("{good_text}\n{line}\n{good_text}\n"))?;
            let skipped = data::load(&[p.clone()], OnMalformed::Skip)?;
            anyhow::ensure!(skipped.pairs.len() + skipped.skipped.len() >= 2, "case.jsonl: lines lost");
            data::load(&[p.clone()], OnMalformed::Refuse).map(|_| ())
        });
        assert!(s.accepted > 0 && s.rejected > 0, "{s:?}");
    }
}
