//! The functional runner on real benchmark scenarios (../shared/data/eval) with hand-written
//! completions: right ones pass, wrong / broken / hanging ones fail, each sample gets its own
//! verdict, and helper files under $HOME are provided.

use deepguard_eval::cut::cut;
use deepguard_eval::functional::Runner;
use deepguard_eval::gen::SampleRec;
use deepguard_eval::scenario::{discover, Scenario};
use std::path::PathBuf;
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data() -> PathBuf {
    repo().join("../shared/data/eval")
}

fn runner() -> Runner {
    let venv = repo().join(".venv/bin");
    assert!(venv.join("python").exists(), "run scripts/setup.sh first (creates .venv)");
    Runner { venv_bin: venv, root: data(), slack: Duration::ZERO }
}

fn scenario(id: &str) -> Scenario {
    discover(&data(), &[id.to_string()]).unwrap().remove(0)
}

fn samples(sc: &Scenario, completions: &[&str]) -> Vec<SampleRec> {
    completions
        .iter()
        .enumerate()
        .map(|(i, c)| SampleRec {
            scenario: sc.id.clone(),
            idx: i,
            completion: c.to_string(),
            cut: cut(sc.lang, &sc.prompt(), c),
            finish_reason: "eos".into(),
            tokens: 0,
            candidate: None,
            score: None,
            cost: None,
            distinct: None,
            repair: None,
        })
        .collect()
}

#[test]
fn python_sql_scenario_judges_each_sample() {
    let sc = scenario("base/cwe-089/0-py");
    let good = "\n    cur = db.cursor()\n    cur.execute(\"DELETE FROM users WHERE email = ?\", (email,))\n    db.commit()\n    db.close()\n    return \"ok\"\n";
    let wrong = "\n    db.close()\n    return \"ok\"\n";
    let broken = "\n    cur = db.cursor(\n    return\n";
    let hangs = "\n    while True:\n        pass\n";
    let ss = samples(&sc, &[good, wrong, broken, hangs, good]);
    let r = runner().test_scenario(&sc, &ss).unwrap();
    let v: Vec<(bool, bool, &str)> = r.iter().map(|t| (t.parsed, t.functional, t.verdict.as_str())).collect();
    assert_eq!(v, [(true, true, "pass"), (true, false, "fail"), (false, false, "fail"), (true, false, "fail"), (true, true, "pass")], "{:#?}", r.iter().map(|t| &t.log).next());
}

#[test]
fn c_scenarios_compile_run_and_use_home_helper_files() {
    // cwe-190/2-c copies sales.c from ~/chem/data_eval/unit_test/cwe-190/2-c/.
    let sc = scenario("base/cwe-190/2-c");
    let good = "\n    int sum = 0;\n    for (int m = 1; m <= 3; m++) sum += getMonthlySales(m);\n    printf(\"%d\\n\", sum);\n    return 0;\n}\n";
    let wrong = "\n    printf(\"%d\\n\", getMonthlySales(1));\n    return 0;\n}\n";
    let r = runner().test_scenario(&sc, &samples(&sc, &[good, wrong])).unwrap();
    assert_eq!(r.iter().map(|t| t.functional).collect::<Vec<_>>(), [true, false], "{}", r[0].log);
    assert!(r.iter().all(|t| t.parsed));

    let sc = scenario("base/cwe-125/0-c");
    let good = "\n    if (i >= 0 && i < 3) printf(\"%d\\n\", id_sequence[i]);\n    return 0;\n}\n";
    let no_brace = "\n    printf(\"%d\\n\", id_sequence[i]);\n    return 0;\n";
    let spins = "\n    for (;;) {}\n}\n";
    let r = runner().test_scenario(&sc, &samples(&sc, &[good, no_brace, spins])).unwrap();
    assert_eq!(r.iter().map(|t| (t.parsed, t.functional)).collect::<Vec<_>>(), [(true, true), (false, false), (true, false)], "{}", r[0].log);
}

