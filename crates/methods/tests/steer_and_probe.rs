//! Steering vectors, their files and hook, activation caching and probes, on tiny random models
//! and the real SVEN data (read from ../shared, never copied).

use candle_core::{Device, Tensor};
use deepguard_methods::data::{self, window_pair, Align, Cwe, OnMalformed, Pair, WindowSpec};
use deepguard_methods::probe::{self, Activations, Pooling, ProbeSettings};
use deepguard_methods::steer::{self, Selector, SteerVector};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::{ForwardOpts, LayerSelect, LogitsSelect, Model};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn tiny(spec: &TinySpec, dir: &Path, name: &str) -> Model {
    let p = dir.join(name);
    spec.write_gguf(&p).unwrap();
    Model::load(&p, &Device::Cpu).unwrap()
}

fn sven_val() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sven/val");
    assert!(p.exists(), "SVEN data not found at {} (CI runs with ../shared beside the repo)", p.display());
    p
}

fn vector(model: &Model, layer: usize, seed: u64) -> SteerVector {
    let d = model.cfg().hidden_size;
    let mut x = seed;
    let mut r = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    SteerVector {
        cwe: Some(Cwe(89)),
        layer,
        direction: (0..d).map(|_| r()).collect(),
        model_arch: model.cfg().arch.name().into(),
        model_fingerprint: model.info.fingerprint.clone(),
        n_layers: model.cfg().n_layers,
        hidden: d,
        n_pairs: 7,
        position: "test".into(),
        probe: Some(deepguard_methods::probe::logreg::LogReg { w: (0..d).map(|_| r()).collect(), b: 0.25 }),
        centroid: (0..d).map(|_| r()).collect(),
    }
}

#[test]
fn hook_adds_alpha_v_exactly_at_the_steered_positions_and_nowhere_else() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(&TinySpec::llama(), d.path(), "m.gguf");
    let v = vector(&m, 1, 5);
    let (alpha, from) = (2.5, 4);
    let ids = Tensor::new(&[5u32, 17, 200, 33, 64, 101, 7, 250][..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let keep = ForwardOpts { keep: LayerSelect::All, logits: LogitsSelect::None, ..ForwardOpts::inference() };
    let plain = m.decoder.forward(&ids, 0, None, &keep).unwrap();
    let hook = v.hook(alpha, from).unwrap();
    let hooks: [&dyn deepguard_runtime::hooks::ResidualHook; 1] = [&hook];
    let steered = m.decoder.forward(&ids, 0, None, &ForwardOpts { hooks: &hooks, ..keep.clone() }).unwrap();
    // blocks below the steered one: untouched
    assert_eq!(plain.hidden[&0].to_vec3::<f32>().unwrap(), steered.hidden[&0].to_vec3::<f32>().unwrap());
    // the steered block's output: + alpha v at positions >= from, identical before
    let a = plain.hidden[&1].squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let b = steered.hidden[&1].squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    for (t, (ra, rb)) in a.iter().zip(&b).enumerate() {
        for j in 0..ra.len() {
            let want = if t >= from { ra[j] + alpha as f32 * v.direction[j] } else { ra[j] };
            assert!((rb[j] - want).abs() <= 1e-5 * want.abs().max(1.0), "position {t} dim {j}: {} vs {want}", rb[j]);
        }
    }
    // the block above sees the edit only from `from` on (causal attention)
    let a2 = plain.hidden[&2].squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let b2 = steered.hidden[&2].squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(a2[..from], b2[..from]);
    assert_ne!(a2[from], b2[from]);
}

#[test]
fn vector_file_round_trips_in_control_vector_layout_and_is_refused_for_another_model() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(&TinySpec::qwen2(), d.path(), "q.gguf");
    let v = vector(&m, 2, 11);
    let path = d.path().join("cwe-089.gguf");
    v.save(&path).unwrap();
    // llama.cpp layout: architecture controlvector, one 1-D F32 tensor direction.<block>
    let mut f = std::fs::File::open(&path).unwrap();
    let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    assert_eq!(c.metadata["general.architecture"].to_string().unwrap(), "controlvector");
    assert_eq!(c.metadata["controlvector.model_hint"].to_string().unwrap(), "qwen2");
    assert_eq!(c.tensor_infos.keys().collect::<Vec<_>>(), vec!["direction.2"]);
    let ti = &c.tensor_infos["direction.2"];
    assert_eq!(ti.shape.dims(), &[64]);
    assert_eq!(ti.ggml_dtype, candle_core::quantized::GgmlDType::F32);
    // round trip
    let w = SteerVector::load(&path).unwrap();
    assert_eq!(w.direction, v.direction);
    assert_eq!((w.cwe, w.layer, w.hidden, w.n_pairs), (Some(Cwe(89)), 2, 64, 7));
    assert_eq!(w.centroid, v.centroid);
    assert_eq!(w.probe.as_ref().unwrap().w, v.probe.as_ref().unwrap().w);
    w.check_model(&m, &path).unwrap();
    // same dimensions, another model file: fingerprint mismatch
    let other = tiny(&TinySpec { context: 512, ..TinySpec::qwen2() }, d.path(), "other.gguf");
    let e = w.check_model(&other, &path).unwrap_err().to_string();
    assert!(e.contains("fingerprint") && e.contains("cwe-089.gguf"), "{e}");
    // other hidden size: dimension mismatch
    let wide = tiny(&TinySpec { hidden: 128, ..TinySpec::qwen2() }, d.path(), "wide.gguf");
    let e = steer::load_selected(&path, &Selector::File, &wide).unwrap_err().to_string();
    assert!(e.contains("dimension 64") && e.contains("hidden size 128"), "{e}");
    // block 0 cannot be written in llama.cpp's numbering
    assert!(vector(&m, 0, 1).save(&d.path().join("zero.gguf")).is_err());
    // a folder + CWE selector picks the file; a wrong CWE is refused
    assert_eq!(steer::load_selected(d.path(), &Selector::Cwe(Cwe(89)), &m).unwrap().len(), 1);
    assert!(steer::load_selected(d.path(), &Selector::Cwe(Cwe(79)), &m).is_err());
}

#[test]
fn steer_argument_parsing() {
    assert_eq!(steer::parse_steer_arg("v/cwe-089.gguf").unwrap(), (PathBuf::from("v/cwe-089.gguf"), Selector::File));
    assert_eq!(steer::parse_steer_arg("v:cwe-089").unwrap(), (PathBuf::from("v"), Selector::Cwe(Cwe(89))));
    assert_eq!(steer::parse_steer_arg("v:89").unwrap(), (PathBuf::from("v"), Selector::Cwe(Cwe(89))));
    assert_eq!(steer::parse_steer_arg("v:auto").unwrap(), (PathBuf::from("v"), Selector::Auto));
}

#[test]
fn sven_loads_with_normalised_cwes_and_malformed_lines_are_reported_by_file_and_line() {
    let l = data::load(&[sven_val()], OnMalformed::Refuse).unwrap();
    assert_eq!(l.pairs.len(), 83);
    assert!(l.skipped.is_empty());
    let cwes: Vec<u32> = data::cwes(&l.pairs).iter().map(|c| c.0 .0).collect();
    assert_eq!(cwes, vec![22, 78, 79, 89, 125, 190, 416, 476, 787]);
    for p in &l.pairs {
        assert!(!p.vulnerable_spans.is_empty() || !p.fixed_spans.is_empty(), "{}", p.source);
        assert!(p.language == "python" || p.language == "c" || p.language == "cpp", "{}", p.language);
    }
    // a file with one good line and two bad ones
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("mixed.jsonl");
    let good = std::fs::read_to_string(sven_val().join("cwe-089.jsonl")).unwrap().lines().next().unwrap().to_string();
    std::fs::write(&f, format!("{good}\n{{broken\n\n{}\n", good.replace("cwe-089", "sqli"))).unwrap();
    let l = data::load(&[f.clone()], OnMalformed::Skip).unwrap();
    assert_eq!(l.pairs.len(), 1);
    assert_eq!(l.skipped.len(), 2);
    assert!(l.skipped[0].contains("mixed.jsonl:2:") && l.skipped[1].contains("mixed.jsonl:4:"), "{:?}", l.skipped);
    let e = data::load(&[f], OnMalformed::Refuse).unwrap_err().to_string();
    assert!(e.contains("mixed.jsonl:2:") && e.contains("invalid JSON"), "{e}");
}

#[test]
fn windows_fit_the_budget_and_keep_the_changed_tokens() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(&TinySpec::qwen2(), d.path(), "q.gguf");
    let pairs = data::load(&[sven_val().join("cwe-089.jsonl")], OnMalformed::Refuse).unwrap().pairs;
    for p in pairs.iter().take(8) {
        for align in [Align::End, Align::Center] {
            let spec = WindowSpec { budget: 40, align, equal_length: false };
            let (v, f) = window_pair(&m.tokenizer, p, &spec).unwrap();
            for (w, text, side) in [(&v, &p.vulnerable, data::Side::Vulnerable), (&f, &p.fixed, data::Side::Fixed)] {
                assert!(w.ids.len() <= 40 && !w.ids.is_empty());
                assert!(w.full_tokens >= w.ids.len());
                // the window's changed tokens decode to text that overlaps the changed characters
                let hull = p.changed_hull(side);
                let got = m.tokenizer.decode(&w.ids[w.changed.clone()]).unwrap();
                if w.changed.len() < 40 && w.changed.start > 0 {
                    assert!(got.contains(&text[hull.clone()]), "{}: changed tokens {got:?} miss {:?}", p.source, &text[hull]);
                }
                if align == Align::End {
                    assert_eq!(w.changed.end, w.ids.len(), "end-aligned windows end with the change");
                }
            }
            let eq = window_pair(&m.tokenizer, p, &WindowSpec { equal_length: true, ..spec }).unwrap();
            assert_eq!(eq.0.ids.len(), eq.1.ids.len());
            assert_eq!(eq.0.ids.len(), v.ids.len().min(f.ids.len()));
        }
    }
}

fn few_pairs() -> Vec<Pair> {
    let l = data::load(&[sven_val()], OnMalformed::Refuse).unwrap();
    data::limit_per_cwe(l.pairs, 1).into_iter().take(3).collect()
}

#[test]
fn activations_are_cached_and_a_second_run_reads_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(&TinySpec::llama(), d.path(), "m.gguf");
    let pairs = few_pairs();
    let spec = WindowSpec { budget: 24, align: Align::End, equal_length: false };
    let cache = d.path().join("cache");
    let a = probe::collect(&m, &pairs, &spec, Some(&cache), false).unwrap();
    assert_eq!(a.pooled[&Pooling::Last].len(), 6 * 3 * 64);
    // the last-token representation equals a direct forward pass's
    let (w, _) = window_pair(&m.tokenizer, &pairs[0], &spec).unwrap();
    let ids = Tensor::new(w.ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let out = m.decoder.forward(&ids, 0, None, &ForwardOpts { keep: LayerSelect::All, logits: LogitsSelect::None, ..ForwardOpts::inference() }).unwrap();
    let h = out.hidden[&2].squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(a.layer(Pooling::Last, 2).row(0), h.last().unwrap().as_slice());
    assert_eq!(a.tokens[0] as usize, w.ids.len());
    // exactly one shard, no temporary files left
    let key_dir = cache.join(probe::cache_key(&m, &pairs, &spec));
    let files: Vec<String> = std::fs::read_dir(&key_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files, vec!["shard-00000.safetensors"]);
    // tamper with the shard: a second run returns the tampered values, so it read the cache
    let shard = key_dir.join(&files[0]);
    let mut ts = candle_core::safetensors::load(&shard, &Device::Cpu).unwrap();
    let z = ts["last"].zeros_like().unwrap();
    ts.insert("last".into(), z);
    candle_core::safetensors::save(&ts, &shard).unwrap();
    let b = probe::collect(&m, &pairs, &spec, Some(&cache), false).unwrap();
    assert!(b.pooled[&Pooling::Last].iter().all(|&x| x == 0.0));
    assert_eq!(b.pooled[&Pooling::Mean], a.pooled[&Pooling::Mean]);
    // other settings: another key
    let other = WindowSpec { budget: 16, ..spec };
    assert_ne!(probe::cache_key(&m, &pairs, &spec), probe::cache_key(&m, &pairs, &other));
}

/// Synthetic activations: 40 pairs, 4 layers, d = 6. The secure side is shifted along feature 0
/// by `shift[layer]`; item noise is shared within a pair plus a little per side.
fn synthetic(shift: [f32; 4], tokens: impl Fn(usize) -> (u32, u32)) -> Activations {
    let (n, l, d) = (40, 4, 6);
    let mut s = 7u64;
    let mut r = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut v = Vec::new();
    let mut toks = Vec::new();
    for p in 0..n {
        let base: Vec<f32> = (0..l * d).map(|_| r() * 4.0).collect();
        for side in 0..2 {
            for layer in 0..l {
                for j in 0..d {
                    let mut x = base[layer * d + j] + 0.05 * r();
                    if side == 1 && j == 0 {
                        x += shift[layer];
                    }
                    v.push(x);
                }
            }
        }
        let (a, b) = tokens(p);
        toks.extend([a, b]);
    }
    let mut pooled = HashMap::new();
    pooled.insert(Pooling::Last, v);
    Activations { n_layers: l, hidden: d, pooled, tokens: toks.clone(), full_tokens: toks, cwes: (0..n).map(|i| Cwe(if i % 2 == 0 { 89 } else { 79 })).collect() }
}

#[test]
fn probes_find_the_layer_with_the_signal_and_length_baselines_are_computed_on_the_same_pairs() {
    // signal peaks at layer 2 and fades at the last layer; the fixed side is longer in 30 of 40
    let acts = synthetic([0.0, 0.3, 3.0, 0.3], |p| if p < 30 { (50, 60) } else { (70, 60) });
    let s = ProbeSettings { folds: 5, seed: 42, l2: 0.01, min_pairs_per_cwe: 8 };
    let r = probe::probe_all(&acts, Pooling::Last, &s, |_| {});
    assert_eq!(r.groups.len(), 3, "all + two CWEs");
    let g = &r.groups[0];
    assert_eq!(g.n_pairs, 40);
    assert_eq!(g.peak().layer, 2);
    assert!(g.layers[2].pair_accuracy > 0.95, "{:?}", g.layers[2]);
    assert!(g.layers[0].pair_accuracy < 0.8, "no signal at layer 0: {:?}", g.layers[0]);
    assert!(g.layers[2].diff_norm > 2.5 && g.layers[0].diff_norm < 0.5);
    assert!(probe::bottleneck_line(g).contains("final-layer bottleneck"));
    assert!((g.length.longer_is_fixed - 0.75).abs() < 1e-12);
    assert_eq!(g.length.equal_length_pairs, 0.0);
    // the layer chooser takes a layer at the peak with a real norm
    assert_eq!(steer::choose_layer(g, 0.03), 2);
    // equal lengths: the shortcut is gone and the report says so
    let acts = synthetic([0.0, 0.3, 3.0, 0.3], |_| (40, 40));
    let g = probe::probe_group(&acts, Pooling::Last, &(0..40).collect::<Vec<_>>(), "all", &s);
    assert_eq!(g.length.longer_is_fixed, 0.5);
    assert!(probe::shortcut_line(&g).contains("no signal"), "{}", probe::shortcut_line(&g));
}

#[test]
fn built_vectors_are_mean_differences_and_route_prompts() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(&TinySpec::llama(), d.path(), "m.gguf");
    let pairs = few_pairs();
    let spec = WindowSpec { budget: 24, align: Align::End, equal_length: false };
    let acts = probe::collect(&m, &pairs, &spec, None, false).unwrap();
    let vs = steer::build(&m, &acts, Pooling::Last, 1, &spec, 0.1).unwrap();
    assert_eq!(vs.len(), 1 + 3, "all + one per CWE");
    let x = acts.layer(Pooling::Last, 1);
    // the per-CWE vector of a CWE with one pair is exactly secure - vulnerable of that pair
    let v = vs.iter().find(|v| v.cwe == Some(pairs[0].cwe)).unwrap();
    let want: Vec<f32> = x.row(1).iter().zip(x.row(0)).map(|(a, b)| a - b).collect();
    for (a, b) in v.direction.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4);
    }
    // routing a pair's own vulnerable window picks that pair's CWE (its centroid is nearest)
    let (w, _) = window_pair(&m.tokenizer, &pairs[0], &spec).unwrap();
    let r = steer::route(&m, &vs, &w.ids, 0.5).unwrap();
    assert_eq!(r.cwe, Some(pairs[0].cwe));
    assert!(r.p_secure.is_finite());
}

#[test]
fn sweep_cells_are_zero_at_alpha_zero_and_move_with_alpha() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(&TinySpec::llama(), d.path(), "m.gguf");
    let pairs = few_pairs();
    // centred windows: both changed and unchanged tokens are scored
    let spec = WindowSpec { budget: 32, align: Align::Center, equal_length: false };
    let train = probe::collect(&m, &pairs, &spec, None, false).unwrap();
    let mut seen = 0;
    let cells = steer::sweep(&m, &train, Pooling::Last, &pairs[..2], &spec, &[1, 2], &[0.0, 8.0], |_| seen += 1).unwrap();
    assert_eq!(seen, 2);
    assert_eq!(cells.len(), 4);
    for c in &cells {
        assert_eq!(c.n_pairs, 2);
        if c.alpha == 0.0 {
            // re-running the upper blocks from the kept state reproduces the full pass
            assert!(c.security_gain.abs() < 1e-4 && c.fluency_cost.abs() < 1e-4, "{c:?}");
        } else {
            assert!(c.fluency_cost.abs() > 1e-3, "steering must move the log-probabilities: {c:?}");
        }
    }
    // the best cell maximises the gain among the cells within the fluency budget
    let budget = cells.iter().map(|c| c.fluency_cost).fold(f64::INFINITY, f64::min) + 1e-9;
    let best = steer::best_cell(&cells, budget).unwrap();
    assert!(best.fluency_cost <= budget);
    assert!(cells.iter().filter(|c| c.fluency_cost <= budget).all(|c| c.security_gain <= best.security_gain));
    assert!(steer::best_cell(&cells, budget - 1.0).is_none());
}

#[test]
fn safecoder_loads_and_records_without_char_changes_use_the_prefix_suffix_difference() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/safecoder/val/sec-new-desc.jsonl");
    let l = data::load(&[p], OnMalformed::Refuse).unwrap();
    assert_eq!(l.pairs.len(), 44);
    assert!(l.pairs.iter().all(|p| p.description.is_some()));
    let langs: std::collections::BTreeSet<&str> = l.pairs.iter().map(|p| p.language.as_str()).collect();
    assert!(langs.contains("javascript") && langs.contains("ruby") && langs.contains("go"), "{langs:?}");
    let bare: Vec<&Pair> = l.pairs.iter().filter(|p| p.vulnerable_spans.is_empty() && p.fixed_spans.is_empty()).collect();
    assert_eq!(bare.len(), 1, "one val line has no char_changes");
    let p = bare[0];
    let (hv, hf) = (p.changed_hull(data::Side::Vulnerable), p.changed_hull(data::Side::Fixed));
    // outside the hulls both sides agree
    assert_eq!(p.vulnerable[..hv.start], p.fixed[..hf.start]);
    assert_eq!(p.vulnerable[hv.end..], p.fixed[hf.end..]);
    assert_ne!(p.vulnerable[hv], p.fixed[hf]);
}
