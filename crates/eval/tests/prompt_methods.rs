//! The `prompt:` methods on real dev scenarios, as the generation stage applies them: the
//! reminder is a comment line in the scenario's own syntax (`#` for Python, `//` for C) at the
//! top of the prompt, nothing else changes, and `prompt:cwe` names the weakness the routing probe
//! picks, not the scenario's label.

use deepguard_eval::rerank::{method_of, Candidates};
use deepguard_eval::scenario::{discover, Scenario};
use deepguard_methods::data::Cwe;
use deepguard_methods::guided::{cwe_reminder, SECURE_REMINDER};
use deepguard_methods::probe::logreg::LogReg;
use deepguard_methods::spec::MethodSpec;
use deepguard_methods::steer::SteerVector;
use deepguard_runtime::generate::Prompt;
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::{ForwardOpts, LayerSelect, LogitsSelect, Model};
use std::path::{Path, PathBuf};

fn scenarios(ids: &[&str]) -> Vec<Scenario> {
    let data = std::fs::canonicalize(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval")).expect("../shared/data/eval");
    discover(&data, &ids.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn tiny(dir: &Path) -> Model {
    let gguf = dir.join("tiny.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&gguf).unwrap();
    Model::load(&gguf, &candle_core::Device::Cpu).unwrap()
}

/// What the generation stage gives the model for a scenario under `method`.
fn shown(model: &Model, method: &dyn Candidates, sc: &Scenario) -> String {
    match method.prompt(model, Prompt::Code { text: sc.prompt(), comment: sc.lang.comment().into() }).unwrap() {
        Prompt::Code { text, .. } => text,
        Prompt::Chat(_) => panic!("a code prompt became a chat"),
    }
}

#[test]
fn prompt_secure_adds_one_comment_line_in_the_scenarios_syntax() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny(t.path());
    let method = method_of(&"prompt:secure".parse().unwrap(), false);
    let [py, c] = <[Scenario; 2]>::try_from(scenarios(&["base/cwe-089/0-py", "base/cwe-787/0-c"])).unwrap();
    assert_eq!(shown(&model, method.as_ref(), &py), format!("# {SECURE_REMINDER}\n{}", py.prompt()));
    assert_eq!(shown(&model, method.as_ref(), &c), format!("// {SECURE_REMINDER}\n{}", c.prompt()));
    // Base shows the prompt as it is.
    let base = method_of(&MethodSpec::base(), false);
    assert_eq!(shown(&model, base.as_ref(), &py), py.prompt());
}

#[test]
fn prompt_cwe_names_the_routed_weakness_not_the_label() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny(t.path());
    // A CWE-078 scenario; vectors for CWE-089 and CWE-078 whose centroids put the prompt's last
    // token exactly on CWE-089's: the probe routes to CWE-089, whatever the label says.
    let sc = scenarios(&["base/cwe-078/0-py"]).remove(0);
    let ids = model.tokenizer.encode(&sc.prompt()).unwrap();
    let layer = 1;
    let opts = ForwardOpts { keep: LayerSelect::Only(vec![layer]), logits: LogitsSelect::None, lora: true, ..Default::default() };
    let out = model.decoder.forward(&candle_core::Tensor::new(ids.as_slice(), model.decoder.device()).unwrap().unsqueeze(0).unwrap(), 0, None, &opts).unwrap();
    let h = &out.hidden[&layer];
    let last: Vec<f32> = h.narrow(1, ids.len() - 1, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let hidden = last.len();
    let vecs = t.path().join("vecs");
    std::fs::create_dir_all(&vecs).unwrap();
    for (cwe, centroid) in [(89, last.clone()), (78, last.iter().map(|x| -10.0 * x - 1.0).collect())] {
        let v = SteerVector {
            cwe: Some(Cwe(cwe)),
            layer,
            direction: vec![0.0; hidden],
            model_arch: "qwen2".into(),
            model_fingerprint: model.info.fingerprint.clone(),
            n_layers: model.cfg().n_layers,
            hidden,
            n_pairs: 1,
            position: "test".into(),
            probe: Some(LogReg { w: vec![0.0; hidden], b: 0.0 }),
            centroid,
        };
        v.save(&vecs.join(deepguard_methods::steer::file_name(Some(Cwe(cwe))))).unwrap();
    }
    let method = method_of(&format!("prompt:cwe:{}", vecs.display()).parse().unwrap(), false);
    let text = shown(&model, method.as_ref(), &sc);
    assert_eq!(text, format!("# {}\n{}", cwe_reminder(Cwe(89)), sc.prompt()));
    assert!(text.contains("SQL injection") && !text.contains("CWE-78"), "{text}");
    // With steering in the same spec, prompt:cwe routes with the steering folder.
    let both = method_of(&format!("steer:{}:auto+prompt:cwe", vecs.display()).parse().unwrap(), false);
    assert_eq!(shown(&model, both.as_ref(), &sc), text);
}
