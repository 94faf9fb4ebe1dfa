//! `deepguard merge RUN...`: joins the shard folders of a sharded `eval` or `compare`
//! (`deepguard_eval::merge`) into one run folder and writes its reports.

use crate::eval::print_summary;
use anyhow::{bail, Result};
use deepguard_eval::merge::{merge, shard_folders};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The run folder the shards wrote into (it holds shard-I-of-N folders), or the shard
    /// folders themselves (e.g. copied back from several machines).
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    #[arg(long, short, value_name = "DIR", help = crate::args::OUT_HELP)]
    pub out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let shards = shard_folders(&a.runs)?;
    let out = match (&a.out, a.runs.as_slice()) {
        (Some(o), _) => o.clone(),
        (None, [one]) if !shards.contains(one) => one.clone(),
        _ => bail!("give --out DIR: where to write the merged run (the shards are not all in one run folder)"),
    };
    let m = merge(&shards, &out)?;
    eprintln!("merged {} shards into {}: {} method(s), {} scenarios", m.shards, out.display(), m.methods.len(), m.manifest.scenarios.len());
    for r in &m.runs {
        print_summary(r);
    }
    match &m.compare {
        Some((md, _)) => {
            print!("{md}");
            eprintln!("compare: {} (.md, .json, .svg); per-method reports: {}", out.join("compare").display(), out.join("report").display());
        }
        None => eprintln!("report: {} (.md, .json, .html)", out.join("report").display()),
    }
    Ok(())
}
