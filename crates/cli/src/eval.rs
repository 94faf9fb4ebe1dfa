//! `deepguard eval`: generate → test → judge → report, each stage resumable from the run folder.

use anyhow::{bail, Context, Result};
use deepguard_eval::gen::{generate_scenario, load_samples};
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
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let stages = ["generate", "test", "judge", "report"];
    let until = stages.iter().position(|s| *s == a.until).with_context(|| format!("--until must be one of {stages:?}"))?;
    let scenarios = discover(&a.data, &a.scenarios)?;
    let method: Box<dyn Method> = Box::new(Base);
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
    if !todo.is_empty() {
        let model = crate::load_model(&a.model)?;
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
    bail!("stages after generate are not available yet")
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
