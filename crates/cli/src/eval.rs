//! `deepguard eval`: arguments for `deepguard_eval::pipeline` (generate → test → judge → report).

use crate::args::{BenchArgs, ModelArgs, SamplingArgs, VenvArgs};
use anyhow::Result;
use deepguard_eval::pipeline::{self, EvalConfig, Stage};
use deepguard_eval::report::MethodRun;
use deepguard_eval::rerank::{By, Rerank};
use deepguard_eval::shard::Command;
use deepguard_runtime::generate::{Base, Method};
use std::path::PathBuf;
use std::time::Instant;

/// The evaluation settings shared by `eval` and `compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct EvalArgs {
    /// Run folder: one subfolder per method (samples, tests, verdicts as jsonl) + the reports.
    #[arg(long, short, default_value = "runs/eval")]
    pub out: PathBuf,
    /// Stop after this stage.
    #[arg(long, value_enum, default_value = "report")]
    pub until: Stage,
    /// Skip generation: test, judge and report what is already generated (e.g. while another
    /// process is still generating into the same folder).
    #[arg(long)]
    pub no_generate: bool,
    /// Keep decoding after the function ends (by default a sample stops there; the cut result is
    /// the same, it only saves time).
    #[arg(long)]
    pub no_early_stop: bool,
    /// Judge backends: `auto` (bandit, semgrep, cppcheck, flawfinder, the ASan/UBSan run of the
    /// unit test for C scenarios of memory-safety CWEs, the security tests (`exploit`) where the
    /// benchmark has them, and codeql when a `codeql` CLI is on PATH) or a comma list of those
    /// names; a re-run with another judge reuses the generations and test results.
    #[arg(long, default_value = "auto")]
    pub judge: String,
    /// Leave out the ASan/UBSan run of the unit tests (on by default for C scenarios of CWE
    /// 119/125/190/416/476/787).
    #[arg(long)]
    pub no_asan: bool,
    /// The benchmark's security tests (exploit judge): default `<data>/security_test`, else the
    /// project's tests for the dev benchmark (`benchmarks/dev/security_test`, pinned to its
    /// prompts).
    #[arg(long, value_name = "DIR")]
    pub security_tests: Option<PathBuf>,
    /// The CodeQL query repository (a github/codeql checkout holding python/ql/src and
    /// cpp/ql/src); default: $DEEPGUARD_CODEQL_REPO, else `codeql-repo` next to the `codeql`
    /// CLI, else the CLI's bundled query packs.
    #[arg(long, value_name = "DIR")]
    pub codeql_repo: Option<PathBuf>,
    /// Rerank: sample K candidates per sample with the method and keep the one scored most secure
    /// (see --rerank-by).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(2..))]
    pub rerank: Option<u64>,
    /// What scores the rerank's candidates: the static judge, the guard's analyzer (needs
    /// --guard), or both (findings first, then the analyzer).
    #[arg(long, value_enum, default_value = "static", requires = "rerank")]
    pub rerank_by: By,
    /// Parallel unit-test runs [default: the number of cores].
    #[arg(long, short)]
    pub jobs: Option<usize>,
}

/// Everything an evaluation run takes besides the method (shared by `eval` and `compare`).
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub bench: BenchArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub eval: EvalArgs,
    #[command(flatten)]
    pub venv: VenvArgs,
    #[command(flatten)]
    pub shard: crate::shard::ShardArgs,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub guided: crate::guided::GuidanceArgs,
    #[command(flatten)]
    pub config: crate::args::ConfigArgs,
}

/// The pipeline's settings from the shared argument groups.
pub fn config(r: &RunArgs) -> Result<EvalConfig> {
    let RunArgs { bench, model, sampling, eval: e, venv, shard: _ } = r;
    let (data, scenarios, skipped) = bench.load()?;
    Ok(EvalConfig {
        data,
        scenarios,
        skipped,
        out: e.out.clone(),
        model: model.model.clone(),
        params: sampling.params(10, 0.2, vec![]),
        stop_at_function_end: !e.no_early_stop,
        until: e.until,
        generate: !e.no_generate,
        jobs: e.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        venv_bin: venv.bin()?,
        judge: e.judge.clone(),
        asan: !e.no_asan,
        security_tests: e.security_tests.clone(),
        codeql_repo: e.codeql_repo.clone(),
        rules: deepguard_eval::judge::tools::semgrep_rules()?,
    })
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let mut cfg = config(&a.run)?;
    let shard = a.run.shard.narrow(&mut cfg, Command::Eval)?;
    let method: Box<dyn Method> = if a.guided.is_base() { Box::new(Base) } else { Box::new(a.guided.method(false)?) };
    let method: Box<dyn Method> = match a.run.eval.rerank {
        Some(k) => Box::new(Rerank { inner: method, k: k as usize, by: a.run.eval.rerank_by }),
        None => method,
    };
    let p = &cfg.params;
    eprintln!("{} scenarios from {}, method {}, n={}, T={}, top-p={}", cfg.scenarios.len(), cfg.data.display(), method.name(), p.n, p.temperature, p.top_p);
    let times = pipeline::run(&cfg, method.as_ref(), &|| crate::load_model(&cfg.model))?;
    eprintln!("stages: generate {:.0}s, test {:.0}s, judge {:.0}s", times.generate_secs, times.test_secs, times.judge_secs);
    if let Some(m) = &shard {
        crate::shard::finished(m, &a.run.eval.out);
        return Ok(());
    }
    if cfg.until < Stage::Report {
        return Ok(());
    }
    let runs = pipeline::report_stage(&cfg)?;
    for r in &runs {
        print_summary(r);
    }
    eprintln!("report: {} (.md, .json, .html) in {:.0}s", cfg.out.join("report").display(), t0.elapsed().as_secs_f64());
    Ok(())
}

pub fn print_summary(r: &MethodRun) {
    let f = |x: Option<f64>| x.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "–".into());
    let (o, s, x) = (&r.table.overall.rates, &r.static_table.overall.rates, &r.exploit_table.overall.rates);
    eprintln!(
        "{}: {}/{} scenarios; pass@1 {}; sec-pass@1 {} combined, {} static, {} exploit ({} scenarios with a security test); security rate {}",
        r.method, r.complete, r.total, f(o.pass_at_1), f(o.sec_pass_at_1), f(s.sec_pass_at_1), f(x.sec_pass_at_1), r.exploit_table.scenarios.len(), f(o.security_rate)
    );
}
