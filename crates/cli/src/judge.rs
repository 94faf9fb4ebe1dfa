//! `deepguard judge calibrate`: how often the security judge flags vulnerable and fixed code.

use anyhow::{Context, Result};
use deepguard_eval::calibrate::{calibrate, markdown};
use deepguard_eval::judge::Judge;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Measure the judge on SVEN val pairs (vulnerable vs fixed version), per CWE.
    Calibrate(CalArgs),
}

#[derive(clap::Args)]
pub struct CalArgs {
    /// Folder of `<cwe>.jsonl` pair files.
    #[arg(long, default_value = "../shared/data/sven/val")]
    pub data: PathBuf,
    /// Judge backends (comma list).
    #[arg(long, default_value = "bandit,semgrep,cppcheck,flawfinder")]
    pub judge: String,
    #[arg(long, default_value = ".venv")]
    pub venv: PathBuf,
    /// Also write the table (markdown) and JSON next to it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(c: Cmd) -> Result<()> {
    let Cmd::Calibrate(a) = c;
    let venv_bin = std::fs::canonicalize(a.venv.join("bin")).with_context(|| format!("{}: no venv (run scripts/setup.sh)", a.venv.display()))?;
    let rules = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../eval/rules/semgrep"));
    let judge = Judge::default_for(&venv_bin, &rules, None).select(&a.judge)?;
    let rows = calibrate(&judge, &a.data)?;
    let md = markdown(&judge.name(), &rows);
    print!("{md}");
    if let Some(o) = a.out {
        std::fs::write(&o, &md).with_context(|| format!("{}: cannot write", o.display()))?;
        let j = o.with_extension("json");
        std::fs::write(&j, serde_json::to_string_pretty(&rows)?).with_context(|| format!("{}: cannot write", j.display()))?;
    }
    Ok(())
}
