//! DeepGuard on tiny random models and real SVEN pairs: gradients (finite differences), losses,
//! the bias formula, the masked sequence score, training, exact resumption, artefacts.

use candle_core::{DType, Device, Tensor, Var};
use deepguard_methods::aggregator::{top_layers, Aggregator, LayerRef, Mode};
use deepguard_methods::analyzer::{sequence_score, Analyzer};
use deepguard_methods::data::{self, Align, OnMalformed, Pair, WindowSpec};
use deepguard_methods::features::{self, Example, FeatureSpec};
use deepguard_methods::guard::{self, Guard};
use deepguard_methods::losses::head_losses;
use deepguard_methods::optim::{AdamW, AdamWConfig, Group};
use deepguard_methods::params::Params;
use deepguard_methods::prior::{t_stats, BiasRule, PriorBias, PriorRule};
use deepguard_methods::train::{self, RunOptions, TrainConfig, Trainer};
use deepguard_runtime::hooks::LogitsProcessor;
use deepguard_runtime::rng;
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::{ForwardOpts, LogitsSelect, Model};
use std::path::{Path, PathBuf};

fn tiny(spec: &TinySpec, dir: &Path, name: &str) -> Model {
    let p = dir.join(name);
    spec.write_gguf(&p).unwrap();
    Model::load(&p, &Device::Cpu).unwrap()
}

fn sven(split: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sven").join(split);
    assert!(p.exists(), "SVEN data not found at {} (CI runs with ../shared beside the repo)", p.display());
    p
}

/// A few real pairs, the first `n` per CWE of a split.
fn pairs(split: &str, n: usize) -> Vec<Pair> {
    data::limit_per_cwe(data::load(&[sven(split)], OnMalformed::Skip).unwrap().pairs, n)
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn get(v: &Var, i: usize) -> f32 {
    v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[i]
}

fn set(v: &Var, i: usize, x: f32) {
    let mut d = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    d[i] = x;
    v.set(&Tensor::from_vec(d, v.dims(), v.device()).unwrap()).unwrap();
}

/// Central finite differences of `f` against its autograd gradient, at the `k` coordinates of
/// each parameter with the largest gradient. Returns the worst relative error.
fn fd_check(params: &[(&str, Var)], k: usize, eps: f32, f: &dyn Fn() -> Tensor) -> f64 {
    let loss = f();
    let grads = loss.backward().unwrap();
    let mut worst: f64 = 0.0;
    for (name, v) in params {
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("no gradient reaches {name}")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|a, b| g[*b].abs().total_cmp(&g[*a].abs()));
        assert!(g[idx[0]].abs() > 1e-6, "{name}: gradient is zero everywhere");
        for &i in idx.iter().take(k) {
            let x = get(v, i);
            set(v, i, x + eps);
            let up = scalar(&f());
            set(v, i, x - eps);
            let down = scalar(&f());
            set(v, i, x);
            let fd = (up - down) / (2.0 * eps as f64);
            let rel = (fd - g[i] as f64).abs() / (fd.abs().max(g[i].abs() as f64)).max(1e-4);
            assert!(rel < 0.05, "{name}[{i}]: finite difference {fd:.6e} vs autograd {:.6e} (relative error {rel:.3})", g[i]);
            worst = worst.max(rel);
        }
    }
    worst
}

#[test]
fn aggregator_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let (d, n) = (16, 4);
    let layers: Vec<LayerRef> = (0..n - 1).map(LayerRef::Block).chain([LayerRef::FinalNorm]).collect();
    let agg = Aggregator::new(Mode::Attention, layers, d, 3, &dev).unwrap();
    let hs: Vec<Var> = (0..n).map(|l| Var::from_tensor(&rng::normal(10 + l as u64, 1.0, &[1, 3, d], &dev).unwrap()).unwrap()).collect();
    let probe = rng::normal(99, 1.0, &[1, 3, d], &dev).unwrap();
    let f = || {
        let x: Vec<Tensor> = hs.iter().map(|v| v.as_tensor().clone()).collect();
        (agg.forward(&x).unwrap() * &probe).unwrap().sum_all().unwrap()
    };
    let p = agg.params().vars;
    // W_k's bias adds q.b_k to every layer's score alike, and softmax ignores that: its gradient
    // is exactly zero, so it is checked apart.
    let g = f().backward().unwrap();
    assert!(g.get(p["aggregator.w_k.bias"].as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-6);
    let mut ps: Vec<(&str, Var)> = ["w_q.weight", "w_q.bias", "w_k.weight", "w_v.weight", "w_v.bias", "w_o.weight", "w_o.bias"].iter().map(|n| (*n, p[&format!("aggregator.{n}")].clone())).collect();
    ps.push(("input layer 0", hs[0].clone()));
    ps.push(("input final norm", hs[3].clone()));
    let worst = fd_check(&ps, 3, 1e-3, &f);
    assert!(worst < 0.05);
    // The layer weights are a distribution over the N layers at every token.
    let x: Vec<Tensor> = hs.iter().map(|v| v.as_tensor().clone()).collect();
    let w = agg.layer_weights(&x).unwrap().unwrap();
    assert_eq!(w.dims(), &[1, 3, n]);
    for row in w.squeeze(0).unwrap().to_vec2::<f32>().unwrap() {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    // mean and last modes: exact.
    let mean = Aggregator::new(Mode::Mean, agg.layers.clone(), d, 0, &dev).unwrap().forward(&x).unwrap();
    let want = ((&x[0] + &x[1]).unwrap() + (&x[2] + &x[3]).unwrap()).unwrap() / 4.0;
    assert!(scalar(&(mean - want.unwrap()).unwrap().abs().unwrap().max_all().unwrap()) < 1e-6);
    let last = Aggregator::new(Mode::Last, vec![LayerRef::FinalNorm], d, 0, &dev).unwrap();
    assert!(last.params().vars.is_empty(), "`last` has no parameters");
    assert_eq!(last.forward(&x[3..]).unwrap().to_vec3::<f32>().unwrap(), x[3].to_vec3::<f32>().unwrap());
}

#[test]
fn top_layers_follow_hf_hidden_states() {
    use LayerRef::*;
    assert_eq!(top_layers(24, 4, Mode::Attention).unwrap(), vec![Block(20), Block(21), Block(22), FinalNorm]);
    assert_eq!(top_layers(24, 4, Mode::Mean).unwrap(), vec![Block(20), Block(21), Block(22), FinalNorm]);
    assert_eq!(top_layers(24, 4, Mode::Last).unwrap(), vec![FinalNorm]);
    assert!(top_layers(3, 4, Mode::Attention).is_err());
}

#[test]
fn analyzer_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let (d, vocab) = (12, 20);
    let an = Analyzer::new(d, vocab, 5, &dev).unwrap();
    let agg = Var::from_tensor(&rng::normal(1, 1.0, &[1, 4, d], &dev).unwrap()).unwrap();
    let ids = Tensor::new(&[[3u32, 7, 3, 19]], &dev).unwrap();
    let f = || {
        let s = an.token_scores(agg.as_tensor(), &ids, None).unwrap();
        sequence_score(&s, &s.ones_like().unwrap()).unwrap().sum_all().unwrap()
    };
    let ps = vec![
        ("embed_sec", an.embed.clone()),
        ("mlp.0.weight", an.l1.w.clone()),
        ("mlp.1.weight (LayerNorm)", an.n1.g.clone()),
        ("mlp.4.weight", an.l2.w.clone()),
        ("mlp.10.weight", an.l4.w.clone()),
        ("aggregated input", agg.clone()),
    ];
    fd_check(&ps, 3, 1e-3, &f);
    // Scores lie in (0, 1); E_sec rows of tokens not in the input get no gradient.
    let s = an.token_scores(agg.as_tensor(), &ids, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(s.iter().all(|&x| x > 0.0 && x < 1.0), "{s:?}");
    let g = f().backward().unwrap();
    let ge = g.get(an.embed.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    assert!(ge[0].iter().all(|&x| x == 0.0) && ge[3].iter().any(|&x| x != 0.0));
    assert!(an.token_scores(agg.as_tensor(), &Tensor::new(&[[3u32, 7, 3, 20]], &dev).unwrap(), None).is_err(), "token outside the vocabulary");
}

#[test]
fn masked_sequence_score_is_exact_and_ignores_pads() {
    let dev = Device::Cpu;
    let s = Tensor::new(&[[0.2f32, 0.4, 0.9], [0.5, 0.7, 0.1]], &dev).unwrap();
    let m = Tensor::new(&[[1f32, 1., 0.], [1., 0., 0.]], &dev).unwrap();
    let v = sequence_score(&s, &m).unwrap().to_vec1::<f32>().unwrap();
    assert!((v[0] - 0.3).abs() < 1e-7 && (v[1] - 0.5).abs() < 1e-7, "{v:?}");
    // Changing a padded position changes nothing.
    let s2 = Tensor::new(&[[0.2f32, 0.4, 0.0], [0.5, 0.0, 1.0]], &dev).unwrap();
    assert_eq!(sequence_score(&s2, &m).unwrap().to_vec1::<f32>().unwrap(), v);
    let all_pad = Tensor::new(&[[1f32, 1., 1.], [0., 0., 0.]], &dev).unwrap();
    assert!(sequence_score(&s, &all_pad).unwrap_err().to_string().contains("no real tokens"));
}

#[test]
fn bias_formulas_are_exact() {
    let t = [0.5f32, -1.0, 0.0, 0.25];
    let mut p = PriorBias::new(&t, 0.2, BiasRule::Paper, 2.0).unwrap();
    // paper: strength * (1 - s) * T
    let want = [0.8f32, -1.6, 0.0, 0.4];
    for (a, b) in p.every.iter().zip(want) {
        assert!((a - b).abs() < 1e-6);
    }
    let mut logits = vec![1.0f32; 4];
    p.process(0, 7, &mut logits).unwrap();
    assert_eq!(logits, vec![1.8, -0.6, 1.0, 1.4]);
    // reference: strength * T / max|T| / s, plus strength * max(T / max|T|, 0) on steps 0 and 1
    let mut r = PriorBias::new(&t, 0.2, BiasRule::Reference, 2.0).unwrap();
    let mut l0 = vec![0.0f32; 4];
    r.process(0, 0, &mut l0).unwrap();
    let want0 = [5.0 + 1.0, -10.0, 0.0, 2.5 + 0.5];
    let mut l2 = vec![0.0f32; 4];
    r.process(0, 2, &mut l2).unwrap();
    let want2 = [5.0, -10.0, 0.0, 2.5];
    for i in 0..4 {
        assert!((l0[i] - want0[i]).abs() < 1e-5 && (l2[i] - want2[i]).abs() < 1e-5, "{l0:?} {l2:?}");
    }
    // A secure-looking prompt (s = 1) gets no bias under the paper rule.
    assert!(PriorBias::new(&t, 1.0, BiasRule::Paper, 1.0).unwrap().every.iter().all(|&x| x == 0.0));
    assert!(PriorBias::new(&t, 1.5, BiasRule::Paper, 1.0).is_err());
    assert!(p.process(0, 0, &mut [0.0; 3]).is_err(), "vocabulary mismatch is refused");
}

#[test]
fn t_stats_rules() {
    // token 1: 3 secure / 1 vulnerable; token 2: vulnerable only; token 0 unseen
    let pairs = vec![(vec![1u32, 1, 3], vec![2u32, 1]), (vec![1u32], vec![2u32, 2, 3])];
    let t = t_stats(&pairs, 4, PriorRule::Counts { smoothing: 1.0 }).unwrap();
    let want = [0.0, 2.0 / 5.0, -3.0 / 4.0, 0.0];
    for (a, b) in t.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{t:?}");
    }
    // order-free
    let rev: Vec<_> = pairs.iter().rev().cloned().collect();
    assert_eq!(t_stats(&rev, 4, PriorRule::Counts { smoothing: 1.0 }).unwrap(), t);
    // running: +0.5 per secure occurrence, -0.5 per vulnerable one, clamped after each batch of 1
    let r = t_stats(&pairs, 4, PriorRule::Running { step: 0.5, batch: 1 }).unwrap();
    assert_eq!(r, vec![0.0, 1.0, -1.0, 0.0]);
    // clamping makes the running rule depend on order: token 1 = clamp(+1.0 - 0.5) + 0.5 = 1.0 ...
    let a = vec![(vec![1u32, 1, 1], vec![]), (vec![], vec![1u32, 1])];
    let b: Vec<_> = a.iter().rev().cloned().collect();
    let ra = t_stats(&a, 2, PriorRule::Running { step: 0.5, batch: 1 }).unwrap();
    let rb = t_stats(&b, 2, PriorRule::Running { step: 0.5, batch: 1 }).unwrap();
    assert_eq!((ra[1], rb[1]), (0.0, 0.5));
    assert!(t_stats(&[(vec![9], vec![])], 4, PriorRule::Counts { smoothing: 1.0 }).is_err());
}

/// log_softmax from primitives (differentiable).
fn log_softmax(z: &Tensor) -> Tensor {
    let m = z.max_keepdim(1).unwrap().detach();
    let zs = z.broadcast_sub(&m).unwrap();
    zs.broadcast_sub(&zs.exp().unwrap().sum_keepdim(1).unwrap().log().unwrap()).unwrap()
}

#[test]
fn head_losses_match_autograd() {
    let dev = Device::Cpu;
    let (t, v) = (5, 9);
    let z = Var::from_tensor(&rng::normal(1, 2.0, &[t, v], &dev).unwrap()).unwrap();
    let zr = rng::normal(2, 2.0, &[t, v], &dev).unwrap();
    let ids = [0u32, 4, 8, 1, 1];
    for (w_kl, clamp) in [(1.0, 100.0), (0.7, 1e-3)] {
        let (hl, g) = head_losses(z.as_tensor(), &zr, &ids, 1.3, w_kl, clamp).unwrap();
        // autograd reference
        let lp = log_softmax(&z.as_tensor().narrow(0, 0, t - 1).unwrap());
        let lr = log_softmax(&zr.narrow(0, 0, t - 1).unwrap());
        let tgt = Tensor::new(&ids[1..], &dev).unwrap();
        let gen = lp.gather(&tgt.unsqueeze(1).unwrap(), 1).unwrap().neg().unwrap().mean_all().unwrap();
        let kl = (lr.exp().unwrap() * (&lr - &lp).unwrap()).unwrap().sum_keepdim(1).unwrap().mean_all().unwrap();
        assert!((scalar(&gen) - hl.gen).abs() < 1e-5, "gen {} vs {}", scalar(&gen), hl.gen);
        assert!((scalar(&kl) - hl.kl_raw).abs() < 1e-5);
        assert_eq!(hl.kl, hl.kl_raw.min(clamp));
        let kl_term = if hl.kl_raw <= clamp { (kl * w_kl).unwrap() } else { kl.zeros_like().unwrap() };
        let total = ((gen * 1.3).unwrap() + kl_term).unwrap();
        let want = total.backward().unwrap().get(z.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let got = g.to_vec2::<f32>().unwrap();
        for (a, b) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "closed-form gradient {a} vs autograd {b}");
        }
        assert!(got[t - 1].iter().all(|&x| x == 0.0), "the last position predicts nothing");
    }
}

/// The tiny model prepared as `train` prepares it, with adapters and features of a few pairs.
struct Setup {
    _dir: tempfile::TempDir,
    model: Model,
    cfg: TrainConfig,
    examples: Vec<Example>,
    adapters: Params,
}

/// `perturb_b`: the std of random B matrices (0: PEFT's zero init, the model is unchanged).
fn setup(spec: TinySpec, n_pairs: usize, perturb_b: f64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny(&spec, dir.path(), "m.gguf");
    let mut cfg = TrainConfig::reference(&model, 2);
    cfg.window = 24;
    cfg.agg_layers = 3;
    let from = cfg.from_layer(model.cfg().n_layers);
    model.decoder.prepare_for_training(from).unwrap();
    let spec_f = FeatureSpec { window: WindowSpec { budget: cfg.window, align: Align::Center, equal_length: false }, from, layers: top_layers(model.cfg().n_layers, cfg.agg_layers, cfg.aggregator).unwrap() };
    let ps: Vec<Pair> = pairs("val", 1).into_iter().take(n_pairs).collect();
    let examples = features::collect(&model, &ps, &spec_f, None, "test", false).unwrap();
    let mut adapters = Params::default();
    for (k, v) in model.decoder.attach_lora(cfg.lora.as_ref().unwrap()).unwrap() {
        if perturb_b > 0.0 && k.contains("lora_B") {
            v.set(&rng::normal(k.len() as u64, perturb_b, v.dims(), &Device::Cpu).unwrap()).unwrap();
        }
        adapters.insert(k, v);
    }
    Setup { _dir: dir, model, cfg, examples, adapters }
}

fn trainer<'a>(s: &'a Setup) -> Trainer<'a> {
    let dev = Device::Cpu;
    let (n, d, v) = (s.model.cfg().n_layers, s.model.cfg().hidden_size, s.model.cfg().vocab_size);
    Trainer {
        model: &s.model,
        cfg: s.cfg.clone(),
        aggregator: Aggregator::new(s.cfg.aggregator, top_layers(n, s.cfg.agg_layers, s.cfg.aggregator).unwrap(), d, 1, &dev).unwrap(),
        analyzer: Analyzer::new(d, v, 2, &dev).unwrap(),
        from: s.cfg.from_layer(n),
        head_w: s.model.decoder.lm_head.dense_weight().unwrap(),
        adapters: s.adapters.clone(),
    }
}

#[test]
fn lora_gradients_of_the_full_objective_match_finite_differences() {
    // Adapters perturbed so that L_kl and the adapters' gradients are not trivially zero; the
    // objective is L_gen + w_sec L_sec + w_kl L_kl through the closed-form head gradient.
    let s = setup(TinySpec::qwen2(), 1, 0.05);
    let tr = trainer(&s);
    let ex = &s.examples[0];
    let (o, grads) = tr.pair(ex, None, Some(1.0)).unwrap();
    assert!(o.kl > 1e-4 && o.kl < 1.0, "perturbed adapters give a non-zero KL below its clamp: {o:?}");
    let grads = grads.unwrap();
    let total = |tr: &Trainer| tr.pair(ex, None, None).unwrap().0.total(&tr.cfg);
    let mut checked = 0;
    for (name, v) in s.adapters.vars.iter().filter(|(k, _)| k.contains("layers.2.")) {
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("no gradient reaches {name}")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let i = (0..g.len()).max_by(|a, b| g[*a].abs().total_cmp(&g[*b].abs())).unwrap();
        let x = get(v, i);
        let eps = 1e-2;
        set(v, i, x + eps);
        let up = total(&tr);
        set(v, i, x - eps);
        let down = total(&tr);
        set(v, i, x);
        let fd = (up - down) / (2.0 * eps as f64);
        let rel = (fd - g[i] as f64).abs() / fd.abs().max(1e-4);
        assert!(rel < 0.05, "{name}[{i}]: finite difference {fd:.5e} vs autograd {:.5e}", g[i]);
        checked += 1;
    }
    assert_eq!(checked, 4, "A and B of q_proj and v_proj in the top block");
    // The heads get gradients too (from L_sec).
    for (name, v) in tr.aggregator.params().vars.iter().chain(tr.analyzer.params().vars.iter()) {
        assert!(grads.get(v.as_tensor()).is_some(), "no gradient reaches {name}");
    }
}

#[test]
fn training_reduces_each_loss() {
    // Each loss alone, minimised by AdamW on a few pairs, goes down.
    for (what, w_gen, w_sec, w_kl) in [("gen", 1.0, 0.0, 0.0), ("sec", 0.0, 1.0, 0.0), ("kl", 0.0, 0.0, 1.0)] {
        let mut s = setup(TinySpec::qwen2(), 3, if what == "kl" { 0.05 } else { 0.0 });
        s.cfg.w_gen = w_gen;
        s.cfg.w_sec = w_sec;
        s.cfg.w_kl = w_kl;
        let tr = trainer(&s);
        let mut heads = tr.aggregator.params();
        heads.extend("", &tr.analyzer.params());
        let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }, vec![Group { params: s.adapters.clone(), lr: 1e-2 }, Group { params: heads, lr: 1e-3 }]);
        let measure = |tr: &Trainer| -> f64 {
            let outs: Vec<_> = s.examples.iter().map(|e| tr.pair(e, None, None).unwrap().0).collect();
            let pick = |o: &train::PairOut| match what {
                "gen" => o.gen,
                "sec" => o.sec,
                _ => o.kl,
            };
            outs.iter().map(pick).sum::<f64>() / outs.len() as f64
        };
        let before = measure(&tr);
        for step in 0..15 {
            for (j, e) in s.examples.iter().enumerate() {
                let (_, g) = tr.pair(e, Some(step * 10 + j as u64), Some(1.0 / 3.0)).unwrap();
                opt.accumulate(&g.unwrap()).unwrap();
            }
            opt.step(1.0, 1.0).unwrap();
        }
        let after = measure(&tr);
        assert!(after < 0.9 * before, "L_{what}: {before:.5} -> {after:.5}");
    }
}

fn run_opts(out: &Path, max_steps: Option<usize>, resume: bool) -> RunOptions {
    RunOptions { out: out.to_path_buf(), resume, cache: None, progress: false, checkpoint_every: 1, val_at_start: true, max_steps, features_only: false }
}

fn tiny_cfg(model: &Model) -> TrainConfig {
    let mut c = TrainConfig::reference(model, 2);
    c.window = 24;
    c.agg_layers = 3;
    c.batch = 2;
    c.accum = 1;
    c.epochs = 2;
    c.lr = 5e-3;
    c.head_lr = 5e-3;
    c
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = candle_core::safetensors::load(path, &Device::Cpu).unwrap().into_iter().map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn train_writes_artefacts_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::llama();
    // Validation on pairs seen in training: a tiny random model learns them, it does not
    // generalise.
    let tr_pairs: Vec<Pair> = pairs("val", 1).into_iter().take(5).collect();
    let val_pairs = tr_pairs[..3].to_vec();

    let mut m = tiny(&spec, dir.path(), "m.gguf");
    let cfg = tiny_cfg(&m);
    let straight = dir.path().join("straight");
    let r = train::train(&mut m, &tr_pairs, &val_pairs, &cfg, &run_opts(&straight, None, false)).unwrap();
    assert_eq!(r.steps_per_epoch, 3);
    assert_eq!(r.state.step, 6);
    let (first, last) = (r.first_val.unwrap(), r.last_val.unwrap());
    assert!(last.loss < first.loss, "validation loss {} -> {}", first.loss, last.loss);
    for f in ["adapter_config.json", "adapter_model.safetensors", "guard.safetensors", "metrics.jsonl", "loss.svg", "train_report.json"] {
        assert!(straight.join(f).exists(), "{f} missing");
    }
    let lines = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1 + 6 + 2, "validation before, 6 steps, 2 epoch validations");
    assert!(std::fs::read_to_string(straight.join("loss.svg")).unwrap().contains("<polyline"));

    // Killed after 4 steps (mid-epoch 2), then resumed: the same result, bit for bit.
    let mut m2 = tiny(&spec, dir.path(), "m2.gguf");
    let resumed = dir.path().join("resumed");
    let r1 = train::train(&mut m2, &tr_pairs, &val_pairs, &cfg, &run_opts(&resumed, Some(4), false)).unwrap();
    assert_eq!(r1.state.step, 4);
    let again = train::train(&mut m2, &tr_pairs, &val_pairs, &cfg, &run_opts(&resumed, None, false));
    assert!(again.unwrap_err().to_string().contains("--resume"), "an existing run is not overwritten");
    let mut m3 = tiny(&spec, dir.path(), "m3.gguf");
    let r2 = train::train(&mut m3, &tr_pairs, &val_pairs, &cfg, &run_opts(&resumed, None, true)).unwrap();
    assert_eq!(r2.state.step, 6);
    for f in ["adapter_model.safetensors", "guard.safetensors"] {
        assert_eq!(tensors(&straight.join(f)), tensors(&resumed.join(f)), "{f} differs after resumption");
    }
    let strip = |s: String| s.lines().map(|l| { let mut v: serde_json::Value = serde_json::from_str(l).unwrap(); v.as_object_mut().unwrap().remove("secs"); v }).collect::<Vec<_>>();
    assert_eq!(strip(lines), strip(std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap()));
    // Other settings are refused on resume.
    let mut other = cfg.clone();
    other.lr = 1.0;
    let e = train::train(&mut m3, &tr_pairs, &val_pairs, &other, &run_opts(&resumed, None, true)).unwrap_err();
    assert!(e.to_string().contains("other settings"), "{e}");
}

#[test]
fn guard_files_load_score_and_refuse_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::qwen2();
    let mut m = tiny(&spec, dir.path(), "m.gguf");
    let mut cfg = tiny_cfg(&m);
    cfg.epochs = 1;
    let out = dir.path().join("g");
    let ps: Vec<Pair> = pairs("val", 1).into_iter().take(4).collect();
    train::train(&mut m, &ps, &ps[..2], &cfg, &run_opts(&out, None, false)).unwrap();

    let pc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((pc["peft_type"].as_str(), pc["r"].as_u64(), pc["lora_alpha"].as_f64()), (Some("LORA"), Some(16), Some(32.0)));
    assert_eq!(pc["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
    assert_eq!(pc["layers_to_transform"], serde_json::json!([1, 2]));
    let names: Vec<String> = tensors(&out.join("adapter_model.safetensors")).into_iter().map(|x| x.0).collect();
    assert!(names.contains(&"base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight".to_string()), "{names:?}");
    assert_eq!(names.len(), 8);

    let mut fresh = tiny(&spec, dir.path(), "m.gguf");
    let g = Guard::load(&out, &fresh).unwrap();
    g.attach(&mut fresh).unwrap();
    let ids = fresh.tokenizer.encode("def f(path):\n    return open(path).read()\n").unwrap();
    let (tokens, seq) = g.score(&fresh, &ids).unwrap();
    assert_eq!(tokens.len(), ids.len());
    assert!((tokens.iter().sum::<f32>() / tokens.len() as f32 - seq).abs() < 1e-5);
    let (bias, s) = g.guidance(&fresh, &ids, BiasRule::Paper, 1.0).unwrap();
    assert_eq!(s, seq);
    assert_eq!(bias.every.len(), fresh.cfg().vocab_size);

    // Same dimensions, another architecture: another fingerprint.
    let other = tiny(&TinySpec { arch: deepguard_runtime::Arch::Llama, ..spec }, dir.path(), "other.gguf");
    let e = Guard::load(&out, &other).err().expect("another model is refused").to_string();
    assert!(e.contains("built for model"), "{e}");
    let bigger = tiny(&TinySpec { hidden: 128, ..spec }, dir.path(), "bigger.gguf");
    assert!(Guard::load(&out, &bigger).err().unwrap().to_string().contains("hidden size"));
    assert!(Guard::load(dir.path(), &fresh).err().unwrap().to_string().contains("guard folder"));
}

#[test]
fn peft_adapters_use_hf_row_order() {
    // Llama GGUF files hold q/k rows permuted (llama.cpp's conversion); PEFT files must hold HF
    // order. The same adapters on the GGUF model and on the HF folder of the same weights give
    // the same logits.
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec { dtype: candle_core::quantized::GgmlDType::F32, ..TinySpec::llama() };
    let mut gg = tiny(&spec, dir.path(), "m.gguf");
    let hf_dir = dir.path().join("hf");
    spec.write_hf(&hf_dir).unwrap();
    let mut hf = Model::load(&hf_dir, &Device::Cpu).unwrap();
    let lc = deepguard_runtime::lora::LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: guard::default_targets(gg.cfg().arch), layers: vec![1, 2], seed: 3 };
    let mut adapters = Params::default();
    for (k, v) in gg.decoder.attach_lora(&lc).unwrap() {
        if k.contains("lora_B") {
            v.set(&rng::normal(k.len() as u64 * 7, 0.2, v.dims(), &Device::Cpu).unwrap()).unwrap();
        }
        adapters.insert(k, v);
    }
    let g = Guard {
        meta: guard::GuardMeta {
            model_fingerprint: gg.info.fingerprint.clone(),
            model_arch: "llama".into(),
            n_layers: 3,
            hidden: 64,
            vocab: gg.cfg().vocab_size,
            aggregator: Mode::Last,
            layers: vec![LayerRef::FinalNorm],
            lora: Some(lc.clone()),
            prior_rule: "counts".into(),
            data_hash: String::new(),
            settings: serde_json::Value::Null,
            cwes: vec![],
        },
        aggregator: Aggregator::new(Mode::Last, vec![LayerRef::FinalNorm], 64, 0, &Device::Cpu).unwrap(),
        analyzer: Analyzer::new(64, gg.cfg().vocab_size, 0, &Device::Cpu).unwrap(),
        t_stats: vec![0.0; gg.cfg().vocab_size],
        adapters: Default::default(),
    };
    let out = dir.path().join("peft");
    g.save(&out, &gg, &adapters).unwrap();
    let (lc2, w) = guard::read_peft(&out, hf.cfg()).unwrap();
    assert_eq!((lc2.rank, lc2.alpha, &lc2.targets, &lc2.layers), (4, 8.0, &lc.targets, &lc.layers));
    guard::attach_adapters(&mut hf, &lc2, &w).unwrap();
    // and back into the GGUF model through the permutation
    let (_, w_gg) = guard::read_peft(&out, gg.cfg()).unwrap();
    for (k, v) in &adapters.vars {
        let a = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, w_gg[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{k} round trip");
    }
    let ids = Tensor::new(&[[5u32, 17, 3, 40, 41, 9]], &Device::Cpu).unwrap();
    let o = ForwardOpts { logits: LogitsSelect::All, ..ForwardOpts::inference() };
    // dense weights on both sides, so only the adapters' placement can differ
    gg.decoder.prepare_for_training(0).unwrap();
    hf.decoder.prepare_for_training(0).unwrap();
    let a = gg.decoder.forward(&ids, 0, None, &o).unwrap().logits.unwrap();
    let b = hf.decoder.forward(&ids, 0, None, &o).unwrap().logits.unwrap();
    let base = gg.decoder.forward(&ids, 0, None, &ForwardOpts { lora: false, ..o.clone() }).unwrap().logits.unwrap();
    let diff = scalar(&(&a - &b).unwrap().abs().unwrap().max_all().unwrap());
    let effect = scalar(&(&a - &base).unwrap().abs().unwrap().max_all().unwrap());
    assert!(effect > 1e-2, "the adapters change the output ({effect})");
    assert!(diff < 1e-3, "GGUF + adapters vs HF + PEFT adapters differ by {diff}");
    gg.decoder.detach_lora();
}
