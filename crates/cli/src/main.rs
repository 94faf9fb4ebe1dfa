//! `deepguard`: a thin command-line shell over the deepguard libraries.

mod args;
mod bench;
mod compare;
#[cfg(test)]
mod doc_commands;
mod eval;
mod generate;
mod guided;
mod inspect;
mod probe;
mod judge;
mod merge;
mod scan;
mod shard;
mod serve;
mod steer;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The environment variables deepguard reads, listed in `--help`.
const ENVIRONMENT: &str = "Environment:
  DEEPGUARD_HOME            deepguard's home: models, the eval venv (.venv), the dev security tests [default: the checkout of this binary]
  DEEPGUARD_MODELS          where short model names are looked up [default: $DEEPGUARD_HOME/models]
  DEEPGUARD_CODEQL_REPO     the CodeQL query repository (= eval --codeql-repo)
  DEEPGUARD_KERNELS         cap the CPU kernels at `scalar` or `avx2` [default: the best the CPU has]
  DEEPGUARD_PREFETCH        bytes the matmul kernels prefetch ahead in the weights; 0 turns it off [default: 4096]
  DEEPGUARD_PROFILE         1 prints time per decode step and per stage on stderr
  DEEPGUARD_SANDBOX_CGROUP  a delegated cgroup v2 folder for the sandbox's memory limits, or `off`
  DEEPGUARD_CRASH_AT        (tests) abort at the named write, to test resuming";

#[derive(Parser)]
#[command(name = "deepguard", version, about = "Make a code LLM write secure code, and prove that it does.", after_long_help = ENVIRONMENT)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate code: continue a code prefix (completion mode) or answer a chat message.
    Generate(generate::Args),
    /// Show a model's architecture, dimensions, weight types, vocabulary and chat template.
    Inspect(inspect::Args),
    /// Measure prefill and decode speed (tokens/s), single-stream and batched.
    Bench(bench::Args),
    /// Layer-wise probes (secure vs vulnerable) with length baselines: probe.json, probe.md and
    /// probe.svg in --out.
    Probe(probe::Args),
    /// Per-CWE steering vectors: build them, or sweep layers x alphas.
    #[command(subcommand)]
    Steer(steer::Cmd),
    /// Train DeepGuard: LoRA adapters, multi-layer aggregator and security analyzer on paired code.
    Train(train::Args),
    /// Score every token of a source file with a trained guard's analyzer; highlight risky spans.
    Scan(scan::Args),
    /// Evaluate a method on a benchmark: generate, cut, run unit tests in a sandbox, judge security,
    /// report. --out gets one folder per method (samples, tests, verdicts as jsonl) and the
    /// reports.
    Eval(eval::Args),
    /// Compare methods on the same scenarios, seeds and decoding settings: paired differences
    /// against base with bootstrap intervals over scenarios (markdown, JSON, SVG).
    Compare(compare::Args),
    /// Join the shard folders of a sharded eval or compare (--shard I/N, Slurm arrays,
    /// Kubernetes Indexed Jobs) into one run, with the reports of an unsharded run. --out is
    /// the merged run folder (default: RUN, when one run folder is given).
    Merge(merge::Args),
    /// The security judge on its own (calibrate: measure it on vulnerable/fixed pairs).
    #[command(subcommand)]
    Judge(judge::Cmd),
    /// An OpenAI-compatible HTTP server (completions, chat, streaming) that applies the guard
    /// and/or steering while it generates; concurrent requests are decoded together.
    Serve(serve::Args),
}

/// Parses the command line, applies `--config`, and answers `--print-config`.
fn parse() -> anyhow::Result<Cli> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = Cli::command();
    // A required flag may come from the settings file (compare's --method): find --config with
    // no flag required, then parse strictly (apply_config parses the command line and the file).
    let with_config = argv.iter().any(|a| a.to_string_lossy().split('=').next() == Some("--config"));
    let relaxed = if with_config { cmd.clone().mut_subcommands(|s| s.mut_args(|a| a.required(false))) } else { cmd.clone() };
    let first = relaxed.get_matches_from(argv.clone());
    for w in args::deprecations(&cmd, &argv) {
        eprintln!("{w}");
    }
    let has_config = first.subcommand().is_some_and(|(_, sm)| sm.try_get_one::<std::path::PathBuf>("config").ok().flatten().is_some());
    let matches = if has_config { args::apply_config(cmd.clone(), argv, first)? } else { cmd.clone().get_matches_from(argv) };
    if let Some((name, sm)) = matches.subcommand() {
        if sm.try_get_one::<bool>("print_config").ok().flatten() == Some(&true) {
            print!("{}", args::settings_toml(cmd.find_subcommand(name).expect("parsed"), sm));
            std::process::exit(0);
        }
    }
    Ok(Cli::from_arg_matches(&matches)?)
}

fn main() {
    let cli = parse().unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        std::process::exit(2)
    });
    let r = match cli.cmd {
        Cmd::Generate(a) => generate::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Probe(a) => probe::run(a),
        Cmd::Steer(c) => steer::run(c),
        Cmd::Train(a) => train::run(a),
        Cmd::Scan(a) => scan::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Compare(a) => compare::run(a),
        Cmd::Merge(a) => merge::run(a),
        Cmd::Judge(c) => judge::run(c),
        Cmd::Serve(a) => serve::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Loads a model given a short name, GGUF path or HF folder, with a note on stderr.
pub fn load_model(spec: &str) -> anyhow::Result<deepguard_runtime::Model> {
    let path = deepguard_runtime::models::resolve(spec)?;
    let t = std::time::Instant::now();
    let m = deepguard_runtime::Model::load(&path, &candle_core::Device::Cpu)?;
    eprintln!("loaded {} ({} layers, d={}) in {:.1}s", path.display(), m.cfg().n_layers, m.cfg().hidden_size, t.elapsed().as_secs_f64());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every subcommand, with its path (`deepguard steer build`).
    fn commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            commands(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_command_tree_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The flag table is true: a long flag name has one value type and one help text in every
    /// subcommand that has it.
    #[test]
    fn each_flag_name_has_one_type_and_one_help_text() {
        let mut all = Vec::new();
        commands(&Cli::command(), "deepguard".into(), &mut all);
        let mut seen: BTreeMap<String, (clap::builder::ValueParser, String, String)> = BTreeMap::new();
        let mut problems = Vec::new();
        for (path, cmd) in &all {
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" || long == "version" {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(!help.is_empty(), "{path} --{long} has no help text");
                let parser = arg.get_value_parser().clone();
                match seen.get(long) {
                    None => {
                        seen.insert(long.to_string(), (parser, help, path.clone()));
                    }
                    Some((p, h, first)) => {
                        if p.type_id() != parser.type_id() {
                            problems.push(format!("--{long}: one type in `{first}`, another in `{path}`"));
                        }
                        if *h != help {
                            problems.push(format!("--{long}: two help texts:\n  `{first}`: {h}\n  `{path}`: {help}"));
                        }
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{} flag(s) mean different things:\n{}", problems.len(), problems.join("\n"));
        assert!(seen.len() > 60, "the walk saw only {} flags", seen.len());
    }

    #[test]
    fn old_spellings_still_parse_and_warn() {
        let cmd = Cli::command();
        for (line, new) in [
            ("deepguard probe --data p.jsonl", "--pairs"),
            ("deepguard steer build --data p.jsonl", "--pairs"),
            ("deepguard steer sweep --data p.jsonl --val v.jsonl", "--pairs"),
            ("deepguard train --train p.jsonl", "--pairs"),
            ("deepguard probe --pairs p.jsonl --seed 3", "--fold-seed"),
            ("deepguard train --seed 3", "--init-seed"),
            ("deepguard scan f.py --guard g --max-tokens 9", "--max-file-tokens"),
            ("deepguard judge calibrate --out x.md", "--report"),
        ] {
            let argv: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
            cmd.clone().try_get_matches_from(&argv).unwrap_or_else(|e| panic!("{line}: {e}"));
            let w = args::deprecations(&cmd, &argv);
            assert_eq!(w.len(), 1, "{line}: {w:?}");
            assert!(w[0].contains(&format!("use `{new}`")), "{line}: {}", w[0]);
        }
        let argv: Vec<std::ffi::OsString> = "deepguard probe --pairs p.jsonl".split(' ').map(Into::into).collect();
        assert!(args::deprecations(&cmd, &argv).is_empty());
    }

    #[test]
    fn a_config_file_names_the_method_in_the_same_words_as_the_command_line() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("m.toml");
        std::fs::write(&f, "method = \"guard:runs/g:reference@0.5+prompt:secure\"\nn = 3\n").unwrap();
        let argv: Vec<std::ffi::OsString> = ["deepguard", "eval", "--config", f.to_str().unwrap()].map(Into::into).to_vec();
        let cmd = Cli::command();
        let m = cmd.clone().try_get_matches_from(argv.clone()).unwrap();
        let m = args::apply_config(cmd.clone(), argv, m).unwrap();
        let (_, sm) = m.subcommand().unwrap();
        let printed = args::settings_toml(cmd.find_subcommand("eval").unwrap(), sm);
        assert!(printed.contains("method = \"guard:runs/g:reference@0.5+prompt:secure\""), "{printed}");
        let Cmd::Eval(a) = Cli::from_arg_matches(&m).unwrap().cmd else { panic!("not eval") };
        let spec = a.guided.spec().unwrap();
        assert_eq!(spec, "guard:runs/g:reference@0.5+prompt:secure".parse().unwrap());
        assert_eq!(spec.name(), "guard-g-ref-s0.5+prompt-secure");
    }

    #[test]
    fn the_shorthand_flags_and_method_give_the_same_spec() {
        let parse = |line: &str| -> deepguard_methods::spec::MethodSpec {
            let Cmd::Eval(a) = Cli::try_parse_from(line.split(' ')).unwrap().cmd else { panic!("not eval") };
            let mut s = a.guided.spec().unwrap();
            s.rerank = a.rerank.spec().or(s.rerank);
            s
        };
        assert_eq!(
            parse("deepguard eval --guard runs/g --guard-strength 0.5 --bias-rule reference --steer v:auto --alpha 3 --rerank 4 --rerank-by both"),
            parse("deepguard eval --method guard:runs/g:reference@0.5+steer:v:auto@3+rerank:4:both")
        );
        assert!(Cli::try_parse_from("deepguard eval --method base --guard g".split(' ')).is_err(), "--method and its shorthands conflict");
        // compare has no stage or rerank flags of its own: they would be silently ignored.
        for f in ["--until judge", "--rerank 4", "--rerank-by both"] {
            let line = format!("deepguard compare --method base {f}");
            assert!(Cli::try_parse_from(line.split(' ')).is_err(), "{line} parses");
        }
    }

    #[test]
    fn environment_variables_are_listed_in_help() {
        let help = Cli::command().render_long_help().to_string();
        for v in ["DEEPGUARD_HOME", "DEEPGUARD_MODELS", "DEEPGUARD_CODEQL_REPO", "DEEPGUARD_KERNELS", "DEEPGUARD_PREFETCH", "DEEPGUARD_PROFILE", "DEEPGUARD_SANDBOX_CGROUP"] {
            assert!(help.contains(v), "{v} missing from --help");
        }
        let mut cmd = Cli::command();
        let eval = cmd.find_subcommand_mut("eval").unwrap().render_long_help().to_string();
        assert!(eval.contains("env: DEEPGUARD_CODEQL_REPO"), "eval --help shows --codeql-repo's environment fallback");
    }
}
