//! `deepguard eval`: generate → test → judge → report, each stage resumable from the run folder.

use anyhow::{bail, Context, Result};
use deepguard_eval::functional::{Runner, TestRec};
use deepguard_eval::gen::{generate_scenario, load_samples, SampleRec};
use deepguard_eval::judge::exploit::Exploit;
use deepguard_eval::judge::sanitizer::Sanitizer;
use deepguard_eval::judge::{Item, Judge, JudgeRec};
use deepguard_eval::scenario::Scenario;
use deepguard_eval::{report, sandbox};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use deepguard_eval::method::{Base, Method};
use deepguard_eval::scenario::discover;
use deepguard_eval::store::Jsonl;
use deepguard_runtime::generate::SamplingParams;
use deepguard_runtime::models::DEFAULT_MODEL;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Benchmark root (holding sec_eval/ and unit_test/) or any folder of scenario folders.
    #[arg(long, default_value = "../shared/data/eval")]
    pub data: PathBuf,
    /// Keep only scenarios whose id (e.g. base/cwe-089/0-py) contains one of these (repeatable).
    #[arg(long = "scenario", short = 's')]
    pub scenarios: Vec<String>,
    /// Model: a short name, a .gguf file or an HF folder.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Samples per scenario.
    #[arg(long, short, default_value_t = 10)]
    pub n: usize,
    #[arg(long, short, default_value_t = 0.2)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// New tokens per sample at most.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Keep decoding after the function ends (by default a sample stops there; the cut result is
    /// the same, it only saves time).
    #[arg(long)]
    pub no_early_stop: bool,
    /// Run folder: one subfolder per method (samples, tests, findings as jsonl) + the reports.
    #[arg(long, short, default_value = "runs/eval")]
    pub out: PathBuf,
    /// Stop after this stage: generate, test, judge or report.
    #[arg(long, default_value = "report")]
    pub until: String,
    /// Skip generation: test, judge and report what is already generated (e.g. while another
    /// process is still generating into the same folder).
    #[arg(long)]
    pub no_generate: bool,
    /// Judge backends: `auto` (bandit, semgrep, cppcheck, flawfinder, the ASan/UBSan run of the
    /// unit test for C scenarios of memory-safety CWEs, the security tests (`exploit`) where the
    /// benchmark has them, and codeql when a `codeql` CLI is on PATH) or a comma list of those names; a re-run with another judge reuses the
    /// generations and test results.
    #[arg(long, default_value = "auto")]
    pub judge: String,
    /// Leave out the ASan/UBSan run of the unit tests (on by default for C scenarios of CWE
    /// 119/125/190/416/476/787).
    #[arg(long)]
    pub no_asan: bool,
    /// The benchmark's security tests (exploit judge): default `<data>/security_test`, else the
    /// project's tests for the dev benchmark (`benchmarks/dev/security_test`, pinned to its
    /// prompts).
    #[arg(long)]
    pub security_tests: Option<PathBuf>,
    /// The CodeQL query repository (a github/codeql checkout holding python/ql/src and
    /// cpp/ql/src); default: $DEEPGUARD_CODEQL_REPO, else `codeql-repo` next to the `codeql`
    /// CLI, else the CLI's bundled query packs.
    #[arg(long)]
    pub codeql_repo: Option<PathBuf>,
    /// Parallel unit-test runs (default: the number of cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub guided: crate::guided::GuidanceArgs,
    /// The Python venv with the tests' dependencies and the judges (scripts/setup.sh makes it).
    #[arg(long, default_value = ".venv")]
    pub venv: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let stages = ["generate", "test", "judge", "report"];
    let until = stages.iter().position(|s| *s == a.until).with_context(|| format!("--until must be one of {stages:?}"))?;
    // Absolute, since tests run in other folders.
    let data = std::fs::canonicalize(&a.data).with_context(|| format!("{}: benchmark folder not found", a.data.display()))?;
    let scenarios = discover(&data, &a.scenarios)?;
    let method: Box<dyn Method> = if a.guided.steer.is_none() && a.guided.guard.is_none() { Box::new(Base) } else { Box::new(a.guided.method(false)?) };
    let mdir = a.out.join(method.name());
    std::fs::create_dir_all(&mdir).with_context(|| format!("{}: cannot create run folder", mdir.display()))?;
    let params = SamplingParams { temperature: a.temperature, top_p: a.top_p, seed: a.seed, max_tokens: a.max_tokens, stop: vec![], n: a.n };
    let config = serde_json::json!({
        "model": a.model, "method": method.settings(), "sampling": params,
        "stop_at_function_end": !a.no_early_stop,
    });
    check_config(&mdir.join("config.json"), &config)?;
    eprintln!("{} scenarios from {}, method {}, n={}, T={}, top-p={}", scenarios.len(), a.data.display(), method.name(), a.n, a.temperature, a.top_p);

    // 1. Generation.
    let samples_store = Jsonl::new(mdir.join("samples.jsonl"));
    let have = load_samples(&samples_store)?;
    let todo: Vec<_> = scenarios.iter().filter(|s| have.get(&s.id).map_or(0, |v| v.len()) < a.n).collect();
    if !todo.is_empty() && !a.no_generate {
        let mut model = crate::load_model(&a.model)?;
        method.prepare(&mut model)?;
        let pb = progress((todo.len() * a.n) as u64, "generate");
        for sc in todo {
            pb.set_message(sc.id.clone());
            let recs = generate_scenario(&model, method.as_ref(), sc, &params, !a.no_early_stop)?;
            for r in &recs {
                samples_store.append(r)?;
            }
            pb.inc(a.n as u64);
        }
        pb.finish_with_message("done");
    }
    if until == 0 {
        eprintln!("generation done in {:.0}s ({})", t0.elapsed().as_secs_f64(), samples_store.path().display());
        return Ok(());
    }

    // 2. Unit tests, in the sandbox, scenarios in parallel.
    let venv_bin = std::fs::canonicalize(a.venv.join("bin")).with_context(|| format!("{}: no venv (run scripts/setup.sh)", a.venv.display()))?;
    sandbox::check_available()?;
    let samples = load_samples(&samples_store)?;
    let tests_store = Jsonl::new(mdir.join("tests.jsonl"));
    let tested: HashSet<(String, usize)> = tests_store.load::<TestRec>()?.into_iter().map(|t| (t.scenario, t.idx)).collect();
    let todo: Vec<(&Scenario, Vec<SampleRec>)> = scenarios
        .iter()
        .filter_map(|sc| {
            let left: Vec<SampleRec> = samples.get(&sc.id)?.iter().filter(|s| !tested.contains(&(sc.id.clone(), s.idx))).cloned().collect();
            (!left.is_empty()).then_some((sc, left))
        })
        .collect();
    if !todo.is_empty() {
        let runner = Runner { venv_bin: venv_bin.clone(), root: data.clone(), slack: Duration::ZERO };
        let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
        let pb = progress(todo.iter().map(|t| t.1.len() as u64).sum(), "test");
        let next = AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<anyhow::Error>> = Default::default();
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some((sc, ss)) = todo.get(k) else { break };
                    if failed.lock().unwrap().is_some() {
                        break;
                    }
                    let r = runner.test_scenario(sc, ss).and_then(|recs| recs.iter().try_for_each(|r| tests_store.append(r)).map(|_| recs));
                    match r {
                        Ok(recs) => {
                            pb.inc(ss.len() as u64);
                            let pass = recs.iter().filter(|r| r.functional).count();
                            if pb.is_hidden() {
                                eprintln!("tested {}: {pass}/{} pass", sc.id, recs.len());
                            }
                        }
                        Err(e) => *failed.lock().unwrap() = Some(e.context(format!("testing {}", sc.id))),
                    }
                });
            }
        });
        pb.finish();
        if let Some(e) = failed.into_inner().unwrap() {
            return Err(e);
        }
    }
    if until == 1 {
        return Ok(());
    }

    // 3. Security judge (one batch per backend over all unjudged samples).
    let rules = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../eval/rules/semgrep"));
    let mut judge = Judge::default_for(&venv_bin, &rules, a.codeql_repo.as_deref());
    if !a.no_asan {
        judge.sanitizer = Some(Sanitizer { runner: Runner { venv_bin: venv_bin.clone(), root: data.clone(), slack: Duration::ZERO } });
    }
    judge.exploit = Exploit::locate(&venv_bin, &data, a.security_tests.as_deref())?;
    if let Some(x) = &judge.exploit {
        let n = scenarios.iter().filter(|s| x.applies(s)).count();
        eprintln!("security tests: {} ({n} of {} scenarios; the others are judged by static analysis only)", x.root.display(), scenarios.len());
    }
    let judge = judge.select(&a.judge)?;
    let judge_store = Jsonl::new(mdir.join(report::judge_file(&judge.name())));
    let judged: HashSet<(String, usize)> = judge_store.load::<JudgeRec>()?.into_iter().map(|t| (t.scenario, t.idx)).collect();
    let items: Vec<Item> = scenarios
        .iter()
        .flat_map(|sc| samples.get(&sc.id).into_iter().flatten().filter(|s| !judged.contains(&(sc.id.clone(), s.idx))).map(move |s| Item { scenario: sc, idx: s.idx, program: s.program(sc) }))
        .collect();
    if !items.is_empty() {
        eprintln!("judging {} samples with {}", items.len(), judge.name());
        let tj = Instant::now();
        for chunk in items.chunks(200) {
            for r in judge.judge(chunk)? {
                judge_store.append(&r)?;
            }
            eprintln!("judged {} samples ({:.0}s)", chunk.len(), tj.elapsed().as_secs_f64());
        }
    }
    if until == 2 {
        return Ok(());
    }

    // 4. Reports over every method in the run folder.
    let mut runs = Vec::new();
    let mut methods: Vec<PathBuf> = std::fs::read_dir(&a.out)?.flatten().map(|e| e.path()).filter(|p| p.join("config.json").exists()).collect();
    methods.sort();
    for m in methods {
        runs.push(report::load_method(&m, &scenarios, &judge.name())?);
    }
    report::write_all(&a.out, &runs)?;
    for r in &runs {
        let o = &r.table.overall;
        let v = &r.table.average;
        eprintln!(
            "{}: {}/{} scenarios; OVERALL pass@1 {:.3} sec@1_pass {:.3} sec-pass@1 {:.3} SR {:.3}; AVERAGE pass@1 {:.3} sec@1_pass {:.3} sec-pass@1 {:.3} SR {:.3}",
            r.method, r.complete, r.total,
            o.rates.pass_at_1.unwrap_or(f64::NAN), o.rates.sec_at_1_pass.unwrap_or(f64::NAN), o.rates.sec_pass_at_1.unwrap_or(f64::NAN), o.rates.security_rate.unwrap_or(f64::NAN),
            v.rates.pass_at_1.unwrap_or(f64::NAN), v.rates.sec_at_1_pass.unwrap_or(f64::NAN), v.rates.sec_pass_at_1.unwrap_or(f64::NAN), v.rates.security_rate.unwrap_or(f64::NAN),
        );
    }
    eprintln!("report: {} (.md, .json, .html) in {:.0}s", a.out.join("report").display(), t0.elapsed().as_secs_f64());
    Ok(())
}

/// The run folder records its settings; reusing it with other settings would mix results.
fn check_config(path: &std::path::Path, config: &serde_json::Value) -> Result<()> {
    if path.exists() {
        let old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?).with_context(|| format!("{}: not valid JSON", path.display()))?;
        if &old != config {
            bail!("{}: this run folder was made with other settings ({old}); use another --out", path.display());
        }
        return Ok(());
    }
    std::fs::write(path, serde_json::to_string_pretty(config)?).with_context(|| format!("{}: cannot write", path.display()))
}

pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!("{what} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} ETA {{eta}} {{msg}}")).unwrap(),
    );
    pb
}
