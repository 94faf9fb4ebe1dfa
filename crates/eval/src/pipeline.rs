//! The staged, resumable evaluation: generate → test → judge → report, for one method at a time,
//! every stage reading and appending to the method's folder of the run (`<out>/<method>/`):
//! `config.json`, `samples.jsonl`, `tests.jsonl`, `judge-<backends>.jsonl`. A stage skips what
//! is already stored, so a killed run continues where it stopped, and a later stage can run
//! while another process is still generating. Reports cover every method in the run folder.

use crate::functional::{Runner, TestRec};
use crate::gen::{generate_scenario, load_samples, SampleRec};
use crate::judge::exploit::Exploit;
use crate::judge::sanitizer::Sanitizer;
use crate::judge::{Item, Judge, JudgeRec};
use crate::report::{self, MethodRun};
use crate::rerank::{self, Candidates};
use crate::scenario::Scenario;
use crate::store::{write_atomic, Jsonl};
use anyhow::{bail, Context, Result};
use deepguard_runtime::generate::{Method, SamplingParams};
use deepguard_runtime::progress::Progress;
use deepguard_runtime::Model;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The last stage to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Generate,
    Test,
    Judge,
    Report,
}

/// Everything an evaluation needs besides the method and the model.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The benchmark root (absolute).
    pub data: PathBuf,
    pub scenarios: Vec<Scenario>,
    /// Scenarios of the benchmark the harness cannot run (`<folder>: <why>`), listed in the report.
    pub skipped: Vec<String>,
    /// The run folder (one subfolder per method, plus the reports).
    pub out: PathBuf,
    /// The model's name as given (recorded in `config.json`).
    pub model: String,
    pub params: SamplingParams,
    /// End a sample once its function has ended (the cut result is the same; saves time).
    pub stop_at_function_end: bool,
    pub until: Stage,
    /// Generate missing samples (false: only test, judge and report what is stored).
    pub generate: bool,
    /// Parallel unit-test runs.
    pub jobs: usize,
    /// The venv's `bin` folder (unit tests, judges).
    pub venv_bin: PathBuf,
    /// Judge backends: `auto` or a comma list.
    pub judge: String,
    pub asan: bool,
    /// Security tests folder (None: `<data>/security_test`, else the project's dev tests).
    pub security_tests: Option<PathBuf>,
    pub codeql_repo: Option<PathBuf>,
    /// The semgrep rules folder.
    pub rules: PathBuf,
}

/// Wall time of each stage run, for the caller to print.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StageTimes {
    pub generate_secs: f64,
    pub test_secs: f64,
    pub judge_secs: f64,
}

impl EvalConfig {
    pub fn method_dir(&self, method: &dyn Method) -> PathBuf {
        self.out.join(method.name())
    }

    /// The judge this run uses (its name keys the judge store).
    pub fn judge(&self) -> Result<Judge> {
        let mut judge = Judge::default_for(&self.venv_bin, &self.rules, self.codeql_repo.as_deref());
        if self.asan {
            judge.sanitizer = Some(Sanitizer { runner: self.runner() });
        }
        judge.exploit = Exploit::locate(&self.venv_bin, &self.data, self.security_tests.as_deref())?;
        judge.select(&self.judge)
    }

    fn runner(&self) -> Runner {
        Runner { venv_bin: self.venv_bin.clone(), root: self.data.clone(), slack: Duration::ZERO }
    }
}

/// Runs the stages up to `cfg.until` for one method. `load_model` is called only when there is
/// something to generate. Returns the stage times.
pub fn run(cfg: &EvalConfig, method: &dyn Candidates, load_model: &dyn Fn() -> Result<Model>) -> Result<StageTimes> {
    let mdir = cfg.method_dir(method);
    std::fs::create_dir_all(&mdir).with_context(|| format!("{}: cannot create run folder", mdir.display()))?;
    let config = serde_json::json!({
        "model": cfg.model, "method": method.settings(), "sampling": cfg.params,
        "stop_at_function_end": cfg.stop_at_function_end,
    });
    check_config(&mdir.join("config.json"), &config)?;
    let mut times = StageTimes::default();
    let t = Instant::now();
    generate_stage(cfg, method, &mdir, load_model)?;
    times.generate_secs = t.elapsed().as_secs_f64();
    if cfg.until == Stage::Generate {
        return Ok(times);
    }
    let t = Instant::now();
    test_stage(cfg, &mdir)?;
    times.test_secs = t.elapsed().as_secs_f64();
    if cfg.until == Stage::Test {
        return Ok(times);
    }
    let t = Instant::now();
    judge_stage(cfg, &mdir)?;
    times.judge_secs = t.elapsed().as_secs_f64();
    Ok(times)
}

/// The model, loaded and prepared for the method on first use.
struct Lazy<'a> {
    model: Option<Model>,
    load: &'a dyn Fn() -> Result<Model>,
    method: &'a dyn Candidates,
}

impl Lazy<'_> {
    fn get(&mut self) -> Result<&Model> {
        if self.model.is_none() {
            let mut m = (self.load)()?;
            self.method.prepare(&mut m)?;
            self.model = Some(m);
        }
        Ok(self.model.as_ref().unwrap())
    }
}

/// 1. Generation: n samples per scenario not yet stored. A method with several candidates per
/// sample ([`Candidates::candidates`]) generates `n * k` into `candidates.jsonl`, and the rerank
/// step keeps `n` of them ([`crate::rerank`]); a method with a repair loop keeps its drafts in
/// `drafts.jsonl`, and the repair step writes what it keeps ([`crate::repair`]). What ends in
/// `samples.jsonl` is what the later stages test and judge.
pub fn generate_stage(cfg: &EvalConfig, method: &dyn Candidates, mdir: &Path, load_model: &dyn Fn() -> Result<Model>) -> Result<()> {
    let (n, k) = (cfg.params.n, method.candidates().max(1));
    let kept_file = if method.repair().is_some() { "drafts.jsonl" } else { "samples.jsonl" };
    let store = Jsonl::new(mdir.join(if k > 1 { "candidates.jsonl" } else { kept_file }));
    let have = load_samples(&store)?;
    let want = n * k;
    let todo: Vec<&Scenario> = cfg.scenarios.iter().filter(|s| have.get(&s.id).map_or(0, |v| v.len()) < want).collect();
    let mut model = Lazy { model: None, load: load_model, method };
    if !todo.is_empty() && cfg.generate {
        let model = model.get()?;
        // With a candidate temperature, the first candidate of each group is drawn as the
        // method alone would draw it (same seeds and temperature), the others at that
        // temperature; sample j keeps its seed either way.
        let t = method.candidate_temperature().filter(|_| k > 1);
        let draws: Vec<(usize, SamplingParams)> = match t {
            Some(t) => vec![
                (0, SamplingParams { n, ..cfg.params.clone() }),
                (n, SamplingParams { n: n * (k - 1), temperature: t, seed: cfg.params.seed.wrapping_add((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)), ..cfg.params.clone() }),
            ],
            None => vec![(0, SamplingParams { n: want, ..cfg.params.clone() })],
        };
        let pb = Progress::new((todo.len() * want) as u64, &format!("generate {}", method.name()), if k > 1 { "candidates" } else { "samples" });
        for sc in todo {
            pb.set_message(sc.id.clone());
            for (first, params) in &draws {
                for mut r in generate_scenario(model, method, sc, params, cfg.stop_at_function_end)? {
                    r.idx += first;
                    if k > 1 {
                        r.score = method.code_score(model, &r.cut.code)?;
                    }
                    store.append(&r)?;
                }
                pb.inc(params.n as u64);
            }
        }
        pb.finish();
    }
    if k > 1 {
        rerank_stage(cfg, mdir, n, k, method.candidates_judged(), kept_file)?;
    }
    if let Some(spec) = method.repair() {
        repair_stage(cfg, method, &spec, mdir, &mut model)?;
    }
    Ok(())
}

/// 1c. Repair: for every scenario whose drafts are all there and whose kept samples are not,
/// the check-repair-choose loop ([`crate::repair`]), a few scenarios per batch of checks.
fn repair_stage(cfg: &EvalConfig, method: &dyn Candidates, spec: &deepguard_methods::spec::RepairSpec, mdir: &Path, model: &mut Lazy) -> Result<()> {
    let n = cfg.params.n;
    let drafts = load_samples(&Jsonl::new(mdir.join("drafts.jsonl")))?;
    let store = Jsonl::new(mdir.join("samples.jsonl"));
    let kept = load_samples(&store)?;
    let todo: Vec<(&Scenario, Vec<SampleRec>)> = cfg
        .scenarios
        .iter()
        .filter(|sc| kept.get(&sc.id).map_or(0, |v| v.len()) < n)
        .filter_map(|sc| drafts.get(&sc.id).filter(|d| d.len() >= n).map(|d| (sc, d[..n].to_vec())))
        .collect();
    if todo.is_empty() || !cfg.generate {
        return Ok(());
    }
    let checks = crate::repair::Checks { judge: rerank::scorer(Judge::default_for(&cfg.venv_bin, &cfg.rules, None)), venv_bin: cfg.venv_bin.clone() };
    let model = model.get()?;
    let pb = Progress::new(todo.len() as u64, &format!("repair (up to {} rounds, checked by {} and a build check)", spec.rounds, checks.judge.name()), "scenarios");
    for chunk in todo.chunks(4) {
        pb.set_message(chunk[0].0.id.clone());
        for s in crate::repair::repair(model, method, &checks, spec, &cfg.params, cfg.stop_at_function_end, chunk)? {
            store.append(&s)?;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(())
}

/// 1b. Rerank: for every scenario whose candidates are all generated and whose kept samples are
/// not, score the candidates (static judge when `judged`; analyzer scores are stored with the
/// candidates) and keep the best of each group in `kept_file`.
fn rerank_stage(cfg: &EvalConfig, mdir: &Path, n: usize, k: usize, judged: bool, kept_file: &str) -> Result<()> {
    let cands = load_samples(&Jsonl::new(mdir.join("candidates.jsonl")))?;
    let store = Jsonl::new(mdir.join(kept_file));
    let kept = load_samples(&store)?;
    let todo: Vec<(&Scenario, &[SampleRec])> = cfg
        .scenarios
        .iter()
        .filter(|sc| kept.get(&sc.id).map_or(0, |v| v.len()) < n)
        .filter_map(|sc| cands.get(&sc.id).filter(|c| c.len() >= n * k).map(|c| (sc, c.as_slice())))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let judge = rerank::scorer(Judge::default_for(&cfg.venv_bin, &cfg.rules, None));
    let by = if judged { judge.name() } else { "the analyzer".into() };
    let pb = Progress::new(todo.len() as u64, &format!("rerank (best of {k} by {by})"), "scenarios");
    for chunk in todo.chunks(8) {
        let verdicts = if judged { rerank::judge(&judge, chunk)? } else { vec![] };
        for (sc, cs) in chunk {
            let vs: Vec<JudgeRec> = verdicts.iter().filter(|v| v.scenario == sc.id).cloned().collect();
            for s in rerank::select(cs, judged.then_some(vs.as_slice()), n, k) {
                store.append(&s)?;
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(())
}

/// 2. Unit tests, in the sandbox, scenarios in parallel.
pub fn test_stage(cfg: &EvalConfig, mdir: &Path) -> Result<()> {
    crate::sandbox::check_available()?;
    crate::functional::install_requirements(&cfg.venv_bin, &cfg.data)?;
    let samples = load_samples(&Jsonl::new(mdir.join("samples.jsonl")))?;
    let store = Jsonl::new(mdir.join("tests.jsonl"));
    let tested: HashSet<(String, usize)> = store.load::<TestRec>()?.into_iter().map(|t| (t.scenario, t.idx)).collect();
    let todo: Vec<(&Scenario, Vec<SampleRec>)> = cfg
        .scenarios
        .iter()
        .filter_map(|sc| {
            let left: Vec<SampleRec> = samples.get(&sc.id)?.iter().filter(|s| !tested.contains(&(sc.id.clone(), s.idx))).cloned().collect();
            (!left.is_empty()).then_some((sc, left))
        })
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let runner = cfg.runner();
    let pb = Progress::new(todo.iter().map(|t| t.1.len() as u64).sum(), "test", "samples");
    let next = AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<anyhow::Error>> = Default::default();
    std::thread::scope(|s| {
        for _ in 0..cfg.jobs.max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some((sc, ss)) = todo.get(k) else { break };
                if failed.lock().unwrap().is_some() {
                    break;
                }
                match runner.test_scenario(sc, ss).and_then(|recs| recs.iter().try_for_each(|r| store.append(r))) {
                    Ok(()) => {
                        pb.set_message(sc.id.clone());
                        pb.inc(ss.len() as u64);
                    }
                    Err(e) => *failed.lock().unwrap() = Some(e.context(format!("testing {}", sc.id))),
                }
            });
        }
    });
    pb.finish();
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// 3. Security judge: one batch per backend over the unjudged samples.
pub fn judge_stage(cfg: &EvalConfig, mdir: &Path) -> Result<()> {
    let judge = cfg.judge()?;
    let samples = load_samples(&Jsonl::new(mdir.join("samples.jsonl")))?;
    let store = Jsonl::new(mdir.join(report::judge_file(&judge.name())));
    let judged: HashSet<(String, usize)> = store.load::<JudgeRec>()?.into_iter().map(|t| (t.scenario, t.idx)).collect();
    let items: Vec<Item> = cfg
        .scenarios
        .iter()
        .flat_map(|sc| samples.get(&sc.id).into_iter().flatten().filter(|s| !judged.contains(&(sc.id.clone(), s.idx))).map(move |s| Item { scenario: sc, idx: s.idx, program: s.program(sc) }))
        .collect();
    if items.is_empty() {
        return Ok(());
    }
    if let Some(x) = &judge.exploit {
        let n = cfg.scenarios.iter().filter(|s| x.applies(s)).count();
        eprintln!("security tests: {} ({n} of {} scenarios; the others are judged by static analysis only)", x.root.display(), cfg.scenarios.len());
    }
    let pb = Progress::new(items.len() as u64, &format!("judge ({})", judge.name()), "samples");
    for chunk in items.chunks(100) {
        for r in judge.judge(chunk)? {
            store.append(&r)?;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(())
}

/// 4. Reports over every method in the run folder (report.md / .json / .html).
pub fn report_stage(cfg: &EvalConfig) -> Result<Vec<MethodRun>> {
    report_folder(&cfg.out, &cfg.scenarios, &cfg.skipped, &cfg.judge()?.name())
}

/// The reports of run folder `out` over every method folder in it (sorted by name), by judge
/// `judge`.
pub fn report_folder(out: &Path, scenarios: &[Scenario], skipped: &[String], judge: &str) -> Result<Vec<MethodRun>> {
    let mut methods: Vec<PathBuf> = std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?.flatten().map(|e| e.path()).filter(|p| p.join("config.json").exists()).collect();
    methods.sort();
    let runs = methods.iter().map(|m| report::load_method(m, scenarios, judge)).collect::<Result<Vec<_>>>()?;
    report::write_all(out, &runs, skipped)?;
    Ok(runs)
}

/// The run folder records its settings; reusing it with other settings would mix results.
pub fn check_config(path: &Path, config: &serde_json::Value) -> Result<()> {
    if path.exists() {
        let old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?).with_context(|| format!("{}: not valid JSON", path.display()))?;
        if &old != config {
            bail!("{}: this run folder was made with other settings ({old}); use another --out", path.display());
        }
        return Ok(());
    }
    write_atomic(path, serde_json::to_string_pretty(config)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::check_config;
    use serde_json::json;

    #[test]
    fn a_run_folder_keeps_the_settings_it_was_made_with() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.json");
        let a = json!({"model": "m", "method": {"method": "base"}, "sampling": {"n": 2}});
        check_config(&p, &a).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&p).unwrap()).unwrap(), a, "the first run writes them");
        check_config(&p, &a).expect("the same settings resume");
        let b = json!({"model": "m", "method": {"method": "base"}, "sampling": {"n": 3}});
        let e = format!("{:#}", check_config(&p, &b).unwrap_err());
        assert!(e.contains(&p.display().to_string()) && e.contains("other settings") && e.contains("another --out"), "{e}");
        std::fs::write(&p, "{not json").unwrap();
        let e = format!("{:#}", check_config(&p, &a).unwrap_err());
        assert!(e.contains(&p.display().to_string()) && e.contains("not valid JSON"), "{e}");
    }
}
