//! The flag vocabulary shared by the subcommands: each flag is defined once here and means one
//! thing everywhere (as in ripgrep's and llama.cpp's single flag tables).
//!
//! - `-m/--model`: a short name, a .gguf file or a Hugging Face folder;
//! - `--data DIR` + `-s/--scenario FILTER`: a benchmark root and a substring filter on scenario
//!   ids (e.g. `base/cwe-089/0-py`);
//! - `-n`, `-t/--temperature`, `--top-p`, `--seed`, `--max-tokens`: sampling;
//! - `--venv DIR`: the Python venv of the unit tests and judges;
//! - `--json`: print JSON instead of text (a switch); `--json-out FILE`: also write it to a file.

use anyhow::{Context, Result};
use deepguard_eval::scenario::{discover_all, Scenario};
use deepguard_runtime::generate::SamplingParams;
use deepguard_runtime::models::{home, shared_data, DEFAULT_MODEL};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a short name (qwen2.5-coder-0.5b, smollm2-135m), a .gguf file or a Hugging Face
    /// folder.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
}

/// A benchmark in the CodeGuard+ layout and a selection of its scenarios.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Benchmark root (holding sec_eval/, unit_test/ and optionally security_test/) or any folder
    /// of scenario folders [default: ../shared/data/eval].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep only scenarios whose id (e.g. base/cwe-089/0-py) contains one of these (repeatable).
    #[arg(long = "scenario", short = 's', value_name = "FILTER")]
    pub scenarios: Vec<String>,
}

impl BenchArgs {
    /// The benchmark root, absolute.
    pub fn root(&self) -> Result<PathBuf> {
        let d = self.data.clone().unwrap_or_else(|| shared_data("eval"));
        std::fs::canonicalize(&d).with_context(|| format!("{}: benchmark folder not found", d.display()))
    }

    /// The root, its scenarios, and the scenarios skipped (a language the harness cannot run),
    /// each also printed as a warning.
    pub fn load(&self) -> Result<(PathBuf, Vec<Scenario>, Vec<String>)> {
        let root = self.root()?;
        let (scenarios, skipped) = discover_all(&root, &self.scenarios)?;
        for s in &skipped {
            eprintln!("warning: skipped {s}");
        }
        Ok((root, scenarios, skipped))
    }
}

/// Sampling settings. Defaults differ per command (generate: one greedy sample; eval and
/// compare: n = 10 at T = 0.2, the benchmark's protocol), so the values are optional here.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Samples per prompt, decoded together as a batch [default: 1 for generate, 10 for eval].
    #[arg(long, short)]
    pub n: Option<usize>,
    /// Sampling temperature; 0 is greedy [default: 0 for generate, 0.2 for eval].
    #[arg(long, short)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Random seed (sample i of a prompt uses a generator derived from it).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// New tokens per sample at most.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
}

impl SamplingArgs {
    pub fn params(&self, n: usize, temperature: f64, stop: Vec<String>) -> SamplingParams {
        SamplingParams { temperature: self.temperature.unwrap_or(temperature), top_p: self.top_p, seed: self.seed, max_tokens: self.max_tokens, stop, n: self.n.unwrap_or(n) }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct VenvArgs {
    /// The Python venv with the unit tests' dependencies and the judges (scripts/setup.sh makes
    /// it) [default: .venv in deepguard's home].
    #[arg(long)]
    pub venv: Option<PathBuf>,
}

impl VenvArgs {
    /// The venv's `bin` folder, absolute.
    pub fn bin(&self) -> Result<PathBuf> {
        let v = self.venv.clone().unwrap_or_else(|| home().join(".venv"));
        std::fs::canonicalize(v.join("bin")).with_context(|| format!("{}: no venv (run scripts/setup.sh)", v.display()))
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct JsonArgs {
    /// Print the result as JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

impl JsonArgs {
    /// Writes `v` to `--json-out` (atomically) when asked.
    pub fn write(&self, v: &serde_json::Value) -> Result<()> {
        if let Some(p) = &self.json_out {
            deepguard_runtime::files::write_atomic(p, serde_json::to_string_pretty(v)?.as_bytes())?;
        }
        Ok(())
    }
}
