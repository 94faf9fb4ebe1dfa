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

/// `--config FILE.toml` and `--print-config` (train, eval): a settings file whose keys are the
/// long flag names, so a file and a command line say the same thing in the same words.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Read settings from this TOML file; its keys are the long flag names (`lora-layers =
    /// "top4"`, `scenario = ["cwe-089"]`, `no-asan = true`). A flag given on the command line
    /// wins over the file. `--print-config` writes such a file.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Print the settings in effect (command line, then --config, then defaults) as TOML, and
    /// exit without running.
    #[arg(long)]
    pub print_config: bool,
}

/// Flags that are not settings (never read from or written to a settings file).
const NOT_SETTINGS: &[&str] = &["help", "version", "config", "print_config"];

/// Applies `--config` of the chosen subcommand: the file's keys become flags appended to the
/// command line, except keys the command line already gives. Returns the matches to build the
/// arguments from. An unknown key, a value of the wrong kind or a file that is not TOML is one
/// error naming the file.
pub fn apply_config(cmd: clap::Command, argv: Vec<std::ffi::OsString>, matches: clap::ArgMatches) -> Result<clap::ArgMatches> {
    use clap::parser::ValueSource;
    let Some((name, sm)) = matches.subcommand() else { return Ok(matches) };
    let Some(file) = sm.try_get_one::<PathBuf>("config").ok().flatten().cloned() else { return Ok(matches) };
    let sub = cmd.find_subcommand(name).expect("the parsed subcommand exists").clone();
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}: cannot read the settings file", file.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a valid TOML settings file: {}", file.display(), e.message()))?;
    let mut extra: Vec<std::ffi::OsString> = vec![];
    for (key, value) in &table {
        let arg = sub.get_arguments().find(|a| a.get_long() == Some(key.as_str()) && !NOT_SETTINGS.contains(&a.get_id().as_str()));
        let Some(arg) = arg else { anyhow::bail!("{}: unknown key `{key}`: not a setting of `deepguard {name}` (see --print-config)", file.display()) };
        if sm.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        let flag = format!("--{key}");
        let is_switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        match value {
            toml::Value::Boolean(b) if is_switch => {
                if *b {
                    extra.push(flag.into());
                }
            }
            _ if is_switch => anyhow::bail!("{}: `{key}` is a switch: write `{key} = true` or `false`", file.display()),
            toml::Value::Array(items) => {
                for it in items {
                    extra.push(flag.clone().into());
                    extra.push(scalar(it).with_context(|| format!("{}: `{key}`", file.display()))?.into());
                }
            }
            v => {
                extra.push(flag.into());
                extra.push(scalar(v).with_context(|| format!("{}: `{key}`", file.display()))?.into());
            }
        }
    }
    let argv: Vec<std::ffi::OsString> = argv.into_iter().chain(extra).collect();
    cmd.try_get_matches_from(argv).map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.to_string().trim_start_matches("error: ").trim()))
}

fn scalar(v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => anyhow::bail!("expected a string, number or boolean, found {}", other.type_str()),
    })
}

/// The settings in effect for subcommand `sub` as a TOML document (what `--print-config`
/// prints and `--config` reads back). Unset optional flags appear as comments.
pub fn settings_toml(sub: &clap::Command, m: &clap::ArgMatches) -> String {
    let mut out = format!("# deepguard {} settings (read back with --config FILE.toml)\n", sub.get_name());
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        let raw: Option<Vec<String>> = m.get_raw(id).map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect());
        let is_switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let many = matches!(arg.get_action(), clap::ArgAction::Append) || arg.get_value_delimiter().is_some();
        match raw {
            None => out.push_str(&format!("# {long} = (not set)\n")),
            Some(vs) if is_switch => out.push_str(&format!("{long} = {}\n", vs.first().map(|v| v == "true").unwrap_or(false))),
            Some(vs) if many => out.push_str(&format!("{long} = [{}]\n", vs.iter().map(|v| typed(v)).collect::<Vec<_>>().join(", "))),
            Some(vs) => out.push_str(&format!("{long} = {}\n", typed(vs.first().map(String::as_str).unwrap_or("")))),
        }
    }
    out
}

/// A raw flag value as a TOML value: a number when TOML reads it as one, else a string.
fn typed(v: &str) -> String {
    match toml::from_str::<toml::Table>(&format!("x = {v}")).ok().and_then(|t| t.get("x").cloned()) {
        Some(toml::Value::Integer(_) | toml::Value::Float(_)) => v.to_string(),
        _ => toml::Value::String(v.to_string()).to_string(),
    }
}
