//! The flag vocabulary shared by the subcommands: each flag is defined once here (a group, or a
//! help text that every command using the name shares) and means one thing everywhere (as in
//! ripgrep's and llama.cpp's single flag tables); a test walks the command tree and fails on a
//! name with two types or two help texts.
//!
//! - `-m/--model`: a short name, a .gguf file or a Hugging Face folder;
//! - `--data DIR` + `-s/--scenario FILTER`: a benchmark root and a substring filter on scenario
//!   ids (e.g. `base/cwe-089/0-py`) or a scenario folder's path;
//! - `--pairs PATH...`: vulnerable/fixed pair files (probe, steer, train, scan, judge calibrate);
//! - `-n`, `-t/--temperature`, `--top-p`, `--seed`, `--max-tokens`: sampling;
//! - `--method SPEC` (or `--guard`, `--steer`, ...): the method (`deepguard_methods::spec`);
//! - `--venv DIR`: the Python venv of the unit tests and judges;
//! - `--out DIR`: the output folder;
//! - `--json`: print JSON instead of text (a switch); `--json-out FILE`: also write it to a file.
//!
//! Old spellings stay for one release as hidden aliases; [`deprecations`] warns about them.

use anyhow::{Context, Result};
use deepguard_eval::scenario::{discover_all, Scenario};
use deepguard_runtime::generate::SamplingParams;
use deepguard_runtime::models::{home, shared_data, DEFAULT_MODEL};
use std::path::{Path, PathBuf};

/// `--model`.
pub const MODEL_HELP: &str = "Model: a short name (qwen2.5-coder-0.5b, smollm2-135m), a .gguf file or a Hugging Face folder (bench takes several).";
/// `--pairs`.
pub const PAIRS_HELP: &str = "Vulnerable/fixed pair files (jsonl: func_src_before, func_src_after, vul_type) or folders of them, e.g. ../shared/data/sven/train (repeatable).";
/// `--val`.
pub const VAL_HELP: &str = "Validation pair files or folders (repeatable), e.g. ../shared/data/sven/val.";
/// `--window`.
pub const WINDOW_HELP: &str = "Token budget per side around the changed span (0 = whole functions). probe and steer align the window by --align; train centres it on the change.";
/// `--cache`.
pub const CACHE_HELP: &str = "Cache folder for what the model computes on the pairs (probe, steer: activations; train: frozen-layer features); reused by later runs with the same model and data.";
/// `--no-cache`.
pub const NO_CACHE_HELP: &str = "Do not read or write the --cache folder.";
/// `--max-pairs-per-cwe`.
pub const MAX_PAIRS_HELP: &str = "Keep at most N pairs per CWE, the first in file order (train: of the training and of the validation pairs).";
/// `--on-malformed`.
pub const ON_MALFORMED_HELP: &str = "Malformed data lines: report and skip them, or stop.";
/// `--json`.
pub const JSON_HELP: &str = "Print the result as JSON on stdout instead of text.";
/// `--json-out`.
pub const JSON_OUT_HELP: &str = "Also write the JSON result to this file.";
/// `--out`.
pub const OUT_HELP: &str = "Output folder (the command's description says what it writes there).";
/// `-n`.
pub const N_HELP: &str = "Samples per prompt, decoded together as a batch [default: 1 for generate, 10 for eval, compare and bench].";
/// `--pooling`.
pub const POOLING_HELP: &str = "Representation of a window: its last token, the mean over it, or the mean over its changed tokens (probe: a comma list).";
/// `--l2`.
pub const L2_HELP: &str = "L2 strength of the logistic-regression probes (on standardised features; mean log-loss + l2/2 |w|^2).";
/// `--guard`.
pub const GUARD_HELP: &str = "A guard folder written by `deepguard train`. generate, eval, serve: decode with its adapters and its security bias on the logits (= --method guard:DIR; with --steer too: both); scan: score tokens with its analyzer.";
/// `--judge`.
pub const JUDGE_HELP: &str = "Judge backends: `auto` (bandit, semgrep, cppcheck, flawfinder, the ASan/UBSan run of the unit test for C scenarios of memory-safety CWEs, the security tests (`exploit`) where the benchmark has them, and codeql when a `codeql` CLI is on PATH) or a comma list of those names; a re-run with another judge reuses the generations and test results [judge calibrate: the static backends].";
/// `--security-tests`.
pub const SECURITY_TESTS_HELP: &str = "The benchmark's security tests (exploit judge): default `<data>/security_test`, else the project's tests for the dev benchmark (`benchmarks/dev/security_test`, pinned to its prompts).";
/// `-s/--scenario`.
pub const SCENARIO_HELP: &str = "Keep only scenarios whose id (e.g. base/cwe-089/0-py) contains one of these, or the scenario folder at this path (repeatable).";

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    #[arg(long, short, default_value = DEFAULT_MODEL, help = MODEL_HELP)]
    pub model: String,
}
/// A benchmark in the CodeGuard+ layout and a selection of its scenarios.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Benchmark root (holding sec_eval/, unit_test/ and optionally security_test/) or any folder
    /// of scenario folders [default: ../shared/data/eval].
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long = "scenario", short = 's', value_name = "FILTER", help = SCENARIO_HELP)]
    pub scenarios: Vec<String>,
    /// The part of the benchmark to run: `selection` (choose settings here), `confirmation`
    /// (report figures from here) or `all`. The parts split each folder's CWEs alternately in
    /// numeric order, computed over the whole benchmark (docs/loops.md).
    #[arg(long, value_enum, default_value = "all")]
    pub split: deepguard_eval::split::Part,
}

impl BenchArgs {
    /// The benchmark root, absolute.
    pub fn root(&self) -> Result<PathBuf> {
        let d = self.data.clone().unwrap_or_else(|| shared_data("eval"));
        std::fs::canonicalize(&d).with_context(|| format!("{}: benchmark folder not found", d.display()))
    }

    /// The root, its scenarios, and the scenarios skipped (a language the harness cannot run),
    /// each also printed as a warning. A filter that is a scenario folder's path selects that
    /// scenario (by its id; without --data, in the benchmark the folder belongs to).
    pub fn load(&self) -> Result<(PathBuf, Vec<Scenario>, Vec<String>)> {
        let mut filters = Vec::new();
        let mut data = self.data.clone();
        for f in &self.scenarios {
            match scenario_folder(Path::new(f))? {
                Some((id, root)) => {
                    if data.is_none() {
                        data = root;
                    }
                    filters.push(id);
                }
                None => filters.push(f.clone()),
            }
        }
        let root = BenchArgs { data, scenarios: vec![], split: self.split }.root()?;
        let (scenarios, skipped) = discover_all(&root, &filters).map_err(|e| match self.scenarios.iter().find(|f| Path::new(f).is_dir()) {
            Some(dir) => anyhow::anyhow!("{e:#}; {dir} is a folder but not a scenario folder (one holding info.json); name scenarios by id, e.g. -s base/cwe-089/0-py"),
            None => e,
        })?;
        for s in &skipped {
            eprintln!("warning: skipped {s}");
        }
        let scenarios = if self.split == deepguard_eval::split::Part::All {
            scenarios
        } else {
            let n = scenarios.len();
            let kept = deepguard_eval::split::narrow(&discover_all(&root, &[])?.0, scenarios, self.split);
            if kept.is_empty() {
                anyhow::bail!("{}: none of the {n} chosen scenarios is in the {} split", root.display(), format!("{:?}", self.split).to_lowercase());
            }
            kept
        };
        Ok((root, scenarios, skipped))
    }
}

/// A scenario folder's id (`<split>/<cwe>/<name>`, its last three path components) and the
/// benchmark root it lies in (the folder holding `sec_eval/`), if `path` is a scenario folder.
fn scenario_folder(path: &Path) -> Result<Option<(String, Option<PathBuf>)>> {
    if !path.join("info.json").is_file() {
        return Ok(None);
    }
    let abs = std::fs::canonicalize(path).with_context(|| format!("{}: cannot resolve", path.display()))?;
    let parts: Vec<String> = abs.components().rev().take(3).map(|c| c.as_os_str().to_string_lossy().to_string()).collect();
    if parts.len() < 3 {
        anyhow::bail!("{}: a scenario folder lies at <split>/<cwe>/<name> under a benchmark's sec_eval/", path.display());
    }
    let id = format!("{}/{}/{}", parts[2], parts[1], parts[0]);
    let root = abs.ancestors().nth(4).filter(|_| abs.ancestors().nth(3).and_then(|p| p.file_name()).is_some_and(|n| n == "sec_eval")).map(Path::to_path_buf);
    Ok(Some((id, root)))
}

/// Sampling settings. Defaults differ per command (generate: one greedy sample; eval and
/// compare: n = 10 at T = 0.2, the benchmark's protocol), so the values are optional here.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    #[arg(long, short, help = N_HELP)]
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
    #[arg(long, help = JSON_HELP)]
    pub json: bool,
    #[arg(long, value_name = "FILE", help = JSON_OUT_HELP)]
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
        let named = |a: &clap::Arg| a.get_long() == Some(key.as_str()) || a.get_all_aliases().is_some_and(|al| al.contains(&key.as_str()));
        let arg = sub.get_arguments().find(|a| named(a) && !NOT_SETTINGS.contains(&a.get_id().as_str()));
        let Some(arg) = arg else { anyhow::bail!("{}: unknown key `{key}`: not a setting of `deepguard {name}` (see --print-config)", file.display()) };
        if arg.get_long() != Some(key.as_str()) {
            eprintln!("warning: {}: key `{key}` is deprecated: write `{}` (the old spelling goes away in the next release)", file.display(), arg.get_long().unwrap_or_default());
        }
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

/// Warnings for the old spellings on a command line: each is a hidden alias of the flag that
/// replaced it, kept for one release.
pub fn deprecations(cmd: &clap::Command, argv: &[std::ffi::OsString]) -> Vec<String> {
    let mut cmd = cmd;
    let mut path = vec![cmd.get_name().to_string()];
    let mut out = Vec::new();
    for a in argv.iter().skip(1) {
        let a = a.to_string_lossy();
        if let Some(name) = a.strip_prefix("--") {
            let name = name.split('=').next().unwrap_or_default();
            let arg = cmd.get_arguments().find(|x| x.get_long() != Some(name) && x.get_all_aliases().is_some_and(|al| al.contains(&name)));
            if let Some(new) = arg.and_then(|x| x.get_long()) {
                out.push(format!("warning: `{} --{name}` is deprecated: use `--{new}` (the old spelling goes away in the next release)", path.join(" ")));
            }
        } else if let Some(sub) = cmd.find_subcommand(a.as_ref()) {
            cmd = sub;
            path.push(sub.get_name().to_string());
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bench() -> PathBuf {
        std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval")).expect("../shared/data/eval")
    }

    #[test]
    fn a_scenario_folder_path_selects_that_scenario() {
        let dir = bench().join("sec_eval/base/cwe-089/0-py");
        let (root, found, _) = BenchArgs { data: None, scenarios: vec![dir.display().to_string()], split: Default::default() }.load().unwrap();
        assert_eq!(root, bench(), "the benchmark the folder lies in");
        assert_eq!(found.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["base/cwe-089/0-py"]);
        // An id filter still works as before.
        let (_, found, _) = BenchArgs { data: Some(bench()), scenarios: vec!["base/cwe-089/0-py".into()], split: Default::default() }.load().unwrap();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn the_split_narrows_the_chosen_scenarios_and_an_empty_result_is_one_error() {
        use deepguard_eval::split::Part;
        let load = |f: &str, split| BenchArgs { data: Some(bench()), scenarios: vec![f.into()], split }.load();
        let conf = load("cwe-089", Part::Confirmation).unwrap().1;
        assert_eq!(conf.len(), 3, "CWE-089 is a confirmation CWE");
        let e = format!("{:#}", load("cwe-089", Part::Selection).unwrap_err());
        assert!(e.contains("none of the 3 chosen scenarios is in the selection split") && e.contains(&bench().display().to_string()), "{e}");
        assert_eq!(load("base/", Part::Selection).unwrap().1.len(), 12, "base's selection CWEs: 022, 079, 125, 416, 787");
    }

    #[test]
    fn a_folder_that_is_not_a_scenario_says_how_to_name_one() {
        let dir = bench().join("sec_eval/base");
        let e = format!("{:#}", BenchArgs { data: Some(bench()), scenarios: vec![dir.display().to_string()], split: Default::default() }.load().unwrap_err());
        assert!(e.contains("not a scenario folder") && e.contains("-s base/cwe-089/0-py"), "{e}");
    }
}
