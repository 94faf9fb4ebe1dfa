//! `deepguard eval`: arguments for `deepguard_eval::pipeline` (generate → test → judge → report).

use crate::args::{BenchArgs, ModelArgs, SamplingArgs, VenvArgs};
use anyhow::Result;
use deepguard_eval::pipeline::{self, EvalConfig, Stage};
use deepguard_eval::report::MethodRun;
use deepguard_eval::rerank::method_of;
use deepguard_eval::shard::Command;
use std::path::PathBuf;
use std::time::Instant;

/// The evaluation settings shared by `eval` and `compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct EvalArgs {
    #[arg(long, short, default_value = "runs/eval", help = crate::args::OUT_HELP)]
    pub out: PathBuf,
    /// Skip generation: test, judge and report what is already generated (e.g. while another
    /// process is still generating into the same folder).
    #[arg(long)]
    pub no_generate: bool,
    /// Keep decoding after the function ends (by default a sample stops there; the cut result is
    /// the same, it only saves time).
    #[arg(long)]
    pub no_early_stop: bool,
    #[arg(long, default_value = "auto", help = crate::args::JUDGE_HELP)]
    pub judge: String,
    /// Leave out the ASan/UBSan run of the unit tests (on by default for C scenarios of CWE
    /// 119/125/190/416/476/787).
    #[arg(long)]
    pub no_asan: bool,
    #[arg(long, value_name = "DIR", help = crate::args::SECURITY_TESTS_HELP)]
    pub security_tests: Option<PathBuf>,
    /// The CodeQL query repository (a github/codeql checkout holding python/ql/src and
    /// cpp/ql/src); default: `codeql-repo` next to the `codeql` CLI, else the CLI's bundled
    /// query packs.
    #[arg(long, value_name = "DIR", env = "DEEPGUARD_CODEQL_REPO")]
    pub codeql_repo: Option<PathBuf>,
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
    /// Stop after this stage.
    #[arg(long, value_enum, default_value = "report")]
    pub until: Stage,
    #[command(flatten)]
    pub guided: crate::guided::GuidanceArgs,
    #[command(flatten)]
    pub rerank: crate::guided::RerankArgs,
    #[command(flatten)]
    pub config: crate::args::ConfigArgs,
}

/// The pipeline's settings from the shared argument groups, running up to stage `until`.
pub fn config(r: &RunArgs, until: Stage) -> Result<EvalConfig> {
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
        until,
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
    let mut cfg = config(&a.run, a.until)?;
    let shard = a.run.shard.narrow(&mut cfg, Command::Eval)?;
    let mut spec = a.guided.spec()?;
    if let Some(r) = a.rerank.spec() {
        spec.rerank = Some(r);
    }
    let method = method_of(&spec, false);
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
