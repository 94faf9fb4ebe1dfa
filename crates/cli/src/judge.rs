//! `deepguard judge calibrate`: how often the security judge flags vulnerable and fixed code
//! (SVEN pairs), or, with `--exploit`, whether each security test separates its references.

use anyhow::{Context, Result};
use deepguard_eval::calibrate::{calibrate, exploit_markdown, exploit_table, markdown};
use deepguard_eval::functional::Runner;
use deepguard_eval::judge::exploit::Exploit;
use deepguard_eval::judge::Judge;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Measure the judge on vulnerable/fixed pairs (--pairs, default SVEN val), per CWE; with
    /// --exploit, run every scenario's security test of the benchmark (--data) on its secure and
    /// vulnerable references.
    Calibrate(CalArgs),
}

#[derive(clap::Args)]
pub struct CalArgs {
    #[arg(long, value_name = "DIR", help = crate::args::PAIRS_HELP)]
    pub pairs: Option<PathBuf>,
    /// With --exploit: the benchmark (--data) and its scenarios (-s).
    #[command(flatten)]
    pub bench: crate::args::BenchArgs,
    #[arg(long, default_value = "bandit,semgrep,cppcheck,flawfinder", help = crate::args::JUDGE_HELP)]
    pub judge: String,
    /// Prove the benchmark's security tests on their references instead; prints the table per
    /// scenario and `separated: K/N scenarios`, and exits non-zero unless all are separated.
    #[arg(long)]
    pub exploit: bool,
    #[arg(long, value_name = "DIR", help = crate::args::SECURITY_TESTS_HELP)]
    pub security_tests: Option<PathBuf>,
    #[command(flatten)]
    pub venv: crate::args::VenvArgs,
    /// Also write the table (markdown) to this file, and its JSON next to it.
    #[arg(long, alias = "out", value_name = "FILE.md")]
    pub report: Option<PathBuf>,
}

pub fn run(c: Cmd) -> Result<()> {
    let Cmd::Calibrate(a) = c;
    let venv_bin = a.venv.bin()?;
    if a.exploit {
        let (data, scenarios, _) = a.bench.load()?;
        deepguard_eval::sandbox::check_available()?;
        let x = Exploit::locate(&venv_bin, &data, a.security_tests.as_deref())?.with_context(|| format!("{}: no security_test folder (see --security-tests)", data.display()))?;
        let runner = Runner { venv_bin: venv_bin.clone(), root: data.clone(), slack: Duration::ZERO };
        let rows = exploit_table(&x, &runner, &scenarios)?;
        let md = exploit_markdown(&rows);
        let all = rows.iter().all(|r| r.separated);
        print!("{md}");
        write_out(&a.report, &md, &serde_json::to_string_pretty(&rows)?)?;
        if !all {
            anyhow::bail!("{} of {} scenarios not separated by their security tests", rows.iter().filter(|r| !r.separated).count(), rows.len());
        }
        return Ok(());
    }
    let judge = Judge::default_for(&venv_bin, &deepguard_eval::judge::tools::semgrep_rules()?, None).select(&a.judge)?;
    // `--data` named the pairs here before `--pairs` existed.
    let old = a.bench.data.clone().filter(|_| a.pairs.is_none());
    if old.is_some() {
        eprintln!("warning: `deepguard judge calibrate --data PAIRS` is deprecated: use `--pairs` (--data is the benchmark of --exploit)");
    }
    let data = a.pairs.clone().or(old).unwrap_or_else(|| deepguard_runtime::models::shared_data("sven/val"));
    let rows = calibrate(&judge, &data)?;
    let md = markdown(&judge.name(), &rows);
    print!("{md}");
    write_out(&a.report, &md, &serde_json::to_string_pretty(&rows)?)
}

fn write_out(out: &Option<PathBuf>, md: &str, json: &str) -> Result<()> {
    if let Some(o) = out {
        std::fs::write(o, md).with_context(|| format!("{}: cannot write", o.display()))?;
        let j = o.with_extension("json");
        std::fs::write(&j, json).with_context(|| format!("{}: cannot write", j.display()))?;
    }
    Ok(())
}
