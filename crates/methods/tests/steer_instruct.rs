//! Paper-style steering vectors (secure vs insecure instruction at the last prompt token) on a
//! tiny random model: the vector is the mean difference it claims to be, it survives the
//! control-vector file, and `--steer DIR:auto` / `DIR:CWE` load and route it.

use candle_core::{Device, Tensor};
use deepguard_methods::data::{Cwe, Pair};
use deepguard_methods::diagnostics;
use deepguard_methods::steer::{self, SteerVector};
use deepguard_methods::steer_instruct::{self, Instructions};
use deepguard_runtime::generate::DiagnosticPrompt;
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::{ForwardOpts, LayerSelect, LogitsSelect, Model};

fn tiny(dir: &std::path::Path) -> Model {
    let p = dir.join("m.gguf");
    TinySpec { context: 512, ..TinySpec::qwen2() }.write_gguf(&p).unwrap();
    Model::load(&p, &Device::Cpu).unwrap()
}

fn pair(cwe: u32, lang: &str, v: &str, f: &str) -> Pair {
    Pair { source: format!("t:{cwe}"), language: lang.into(), cwe: Cwe(cwe), vulnerable: v.into(), fixed: f.into(), vulnerable_spans: vec![], fixed_spans: vec![], description: None }
}

fn pairs() -> Vec<Pair> {
    vec![
        pair(89, "python", "def get(db, n):\n    c = db.cursor()\n    c.execute('select ' + n)\n", "def get(db, n):\n    c = db.cursor()\n    c.execute('select ?', (n,))\n"),
        pair(89, "python", "def rm(db, i):\n    db.run('delete ' + i)\n", "def rm(db, i):\n    db.run('delete ?', i)\n"),
        pair(89, "python", "import os\ndef q(s):\n    return s.query(x)\n", "import os\ndef q(s):\n    return s.query(esc(x))\n"),
        pair(787, "c", "int f(char *b, int n) {\n  int i;\n  for (i = 0; i <= n; i++) b[i] = 0;\n", "int f(char *b, int n) {\n  int i;\n  for (i = 0; i < n; i++) b[i] = 0;\n"),
        pair(787, "c", "void g(char *d, char *s) {\n  strcpy(d, s);\n", "void g(char *d, char *s) {\n  strncpy(d, s, 8);\n"),
    ]
}

/// Block `layer`'s output at the last token of `text`, computed here without the module.
fn last_hidden(model: &Model, text: &str, layer: usize) -> Vec<f32> {
    let ids = model.tokenizer.encode(text).unwrap();
    let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let out = model.decoder.forward(&t, 0, None, &ForwardOpts { keep: LayerSelect::All, logits: LogitsSelect::None, ..ForwardOpts::inference() }).unwrap();
    let h = &out.hidden[&layer];
    h.narrow(1, ids.len() - 1, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn the_vector_is_the_mean_difference_of_the_two_instructions_last_token_states() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let (instr, budget) = (Instructions::default(), 64);
    let ps = pairs();
    let acts = steer_instruct::collect(&m, &ps, &instr, budget, |_| {}).unwrap();
    let layer = steer_instruct::paper_layer(m.cfg().n_layers);
    assert_eq!(layer, 2, "the tiny model has 3 blocks; the paper steers the last");
    let vectors = steer_instruct::build(&m, &acts, layer, budget, 0.1).unwrap();
    assert_eq!(vectors.iter().map(|v| v.cwe).collect::<Vec<_>>(), vec![None, Some(Cwe(89)), Some(Cwe(787))]);
    for v in &vectors {
        let members: Vec<&Pair> = ps.iter().filter(|p| v.cwe.is_none_or(|c| p.cwe == c)).collect();
        assert_eq!(v.n_pairs, members.len());
        let mut want = vec![0f64; m.cfg().hidden_size];
        let mut centroid = vec![0f64; m.cfg().hidden_size];
        for p in &members {
            let (insecure, secure) = steer_instruct::prompts(&m, p, &instr, budget).unwrap();
            // the two prompts differ only in the instruction line, and end with the code before the change
            let (ci, cs) = (insecure.split_once('\n').unwrap(), secure.split_once('\n').unwrap());
            assert_eq!(ci.1, cs.1);
            assert_ne!(ci.0, cs.0);
            assert!(ci.1.ends_with('\n') && p.vulnerable.starts_with(ci.1) && p.fixed.starts_with(ci.1), "{insecure:?}");
            let (hs, hi) = (last_hidden(&m, &secure, layer), last_hidden(&m, &insecure, layer));
            for j in 0..want.len() {
                want[j] += (hs[j] - hi[j]) as f64 / members.len() as f64;
                centroid[j] += (hs[j] + hi[j]) as f64 / (2 * members.len()) as f64;
            }
        }
        let err = v.direction.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-4, "{:?}: max |v - mean difference| = {err}", v.cwe);
        let cerr = v.centroid.iter().zip(&centroid).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(cerr < 1e-4, "centroid off by {cerr}");
        assert!(v.norm() > 1e-3, "the two instructions give different states");
        assert!(v.position.contains("last prompt token") && v.position.contains("instruction"));
        assert_eq!(v.layer, layer);
    }
}

#[test]
fn instruction_vectors_round_trip_through_the_control_vector_file_and_route() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let ps = pairs();
    let acts = steer_instruct::collect(&m, &ps, &Instructions::default(), 64, |_| {}).unwrap();
    let vectors = steer_instruct::build(&m, &acts, 1, 64, 0.1).unwrap();
    let dir = d.path().join("vec");
    std::fs::create_dir_all(&dir).unwrap();
    for v in &vectors {
        let path = dir.join(steer::file_name(v.cwe));
        v.save(&path).unwrap();
        let back = SteerVector::load(&path).unwrap();
        back.check_model(&m, &path).unwrap();
        assert_eq!((back.cwe, back.layer, back.n_pairs, back.hidden), (v.cwe, v.layer, v.n_pairs, v.hidden));
        assert_eq!(back.direction, v.direction);
        assert_eq!(back.centroid, v.centroid);
        assert_eq!(back.position, v.position);
        let (p, q) = (back.probe.as_ref().unwrap(), v.probe.as_ref().unwrap());
        assert_eq!((&p.w, p.b), (&q.w, q.b));
    }

    // DIR:CWE loads the one vector and steers from the last prompt token
    let prompt = m.tokenizer.encode("def get(db, n):\n    c = db.cursor()\n").unwrap();
    let spec = |sel: &str| {
        let (vectors, select) = steer::parse_steer_arg(&format!("{}:{sel}", dir.display())).unwrap();
        deepguard_methods::spec::SteerSpec { vectors, select, alpha: 4.0, layer: None }
    };
    let (hooks, note) = steer::hooks_for(&m, &spec("cwe-089"), &prompt).unwrap();
    assert_eq!(hooks.len(), 1, "{note}");
    assert!(note.contains("cwe-089.gguf") && note.contains("block 1"), "{note}");

    // DIR:auto routes to the nearest per-CWE centroid, and its probe decides
    let loaded: Vec<SteerVector> = steer::load_selected(&dir, &steer::Selector::Auto, &m).unwrap().into_iter().map(|v| v.1).collect();
    let r = steer::route(&m, &loaded, &prompt, 0.5).unwrap();
    let h = last_hidden(&m, "def get(db, n):\n    c = db.cursor()\n", 1);
    let dist = |v: &SteerVector| v.centroid.iter().zip(&h).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
    let nearest = loaded.iter().enumerate().filter(|(_, v)| v.cwe.is_some()).min_by(|a, b| dist(a.1).total_cmp(&dist(b.1))).unwrap().0;
    assert_eq!(r.chosen, Some(nearest));
    assert_eq!(r.apply, r.p_secure < 0.5);
    let (hooks, note) = steer::hooks_for(&m, &spec("auto"), &prompt).unwrap();
    assert!(note.starts_with("probe-then-steer: nearest CWE"), "{note}");
    assert_eq!(hooks.len(), r.apply as usize);

    // the routing diagnostics count the same decisions
    let prompts: Vec<DiagnosticPrompt> = ["CWE-089", "CWE-787", "CWE-079"]
        .iter()
        .zip(["def get(db, n):\n    c = db.cursor()\n", "int f(char *b, int n) {\n", "def page(r):\n"])
        .map(|(c, t)| DiagnosticPrompt { id: format!("p/{c}"), cwe: c.to_string(), ids: m.tokenizer.encode(t).unwrap() })
        .collect();
    let s = diagnostics::route_prompts(&m, &loaded, &prompts).unwrap();
    assert_eq!(s.prompts, 3);
    assert_eq!(s.steered + s.left_alone, 3);
    assert_eq!(s.by_cwe.values().map(|x| x.0).sum::<usize>(), 3, "every prompt has a nearest CWE");
    assert_eq!(s.own_cwe_has_vector, 2, "CWE-79 has no vector");
    let first = steer::route(&m, &loaded, &prompts[0].ids, 0.5).unwrap();
    assert!(s.by_cwe[&first.cwe.unwrap().slug()].0 >= 1);
}
