//! `--shard I/N` (eval, compare): run one shard of the scenarios into `<out>/shard-I-of-N/`
//! (`deepguard_eval::shard`); without the flag, the scheduler's variables give it.

use anyhow::Result;
use deepguard_eval::pipeline::EvalConfig;
use deepguard_eval::shard::{self, Command, Manifest, Shard};
use std::path::Path;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ShardArgs {
    /// Run shard I of N (from 1) of the scenarios into OUT/shard-I-of-N/, then join the shards
    /// with `deepguard merge OUT`. Without it: from a Slurm job array (SLURM_ARRAY_TASK_ID,
    /// SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX, with DEEPGUARD_SHARDS=N); --shard 1/1 runs unsharded anyway.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
}

impl ShardArgs {
    /// The shard this process runs, if any (the flag, else the scheduler's variables).
    pub fn resolve(&self) -> Result<Option<Shard>> {
        if let Some(s) = self.shard {
            return Ok((s.count > 1).then_some(s));
        }
        let from_env = Shard::from_env(&|k| std::env::var(k).ok())?;
        if from_env.is_none() && std::env::var_os("JOB_COMPLETION_INDEX").is_some() {
            eprintln!("note: JOB_COMPLETION_INDEX is set but {} is not: running unsharded (set it to the Job's completions to shard)", shard::COUNT_VAR);
        }
        Ok(match from_env {
            Some((s, from)) if s.count > 1 => {
                eprintln!("shard {s} (from {from}; --shard 1/1 runs unsharded)");
                Some(s)
            }
            Some((_, from)) => {
                eprintln!("note: {from}: an array of one task, running unsharded");
                None
            }
            None => None,
        })
    }

    /// Narrows `cfg` to this process's shard, if any, and records it in the shard's folder.
    pub fn narrow(&self, cfg: &mut EvalConfig, command: Command) -> Result<Option<Manifest>> {
        let Some(s) = self.resolve()? else { return Ok(None) };
        let m = shard::narrow(cfg, s, command)?;
        eprintln!("shard {s}: {} of the {} scenarios, into {}", m.own.len(), m.scenarios.len(), cfg.out.display());
        Ok(Some(m))
    }
}

/// The line a finished shard prints instead of the reports.
pub fn finished(m: &Manifest, run: &Path) {
    eprintln!(
        "shard {} done: {} scenarios. Once all {} shards are done, `deepguard merge {}` writes the run's reports.",
        m.shard,
        m.own.len(),
        m.shard.count,
        run.display()
    );
}
