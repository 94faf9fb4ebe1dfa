//! `deepguard`: a thin command-line shell over the deepguard libraries.

mod args;
mod bench;
mod compare;
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

#[derive(Parser)]
#[command(name = "deepguard", version, about = "Make a code LLM write secure code, and prove that it does.")]
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
    /// Layer-wise probes (secure vs vulnerable) with length baselines: JSON, markdown, SVG.
    Probe(probe::Args),
    /// Per-CWE steering vectors: build them, or sweep layers x alphas.
    #[command(subcommand)]
    Steer(steer::Cmd),
    /// Train DeepGuard: LoRA adapters, multi-layer aggregator and security analyzer on paired code.
    Train(train::Args),
    /// Score every token of a source file with a trained guard's analyzer; highlight risky spans.
    Scan(scan::Args),
    /// Evaluate a method on a benchmark: generate, cut, run unit tests in a sandbox, judge security, report.
    Eval(eval::Args),
    /// Compare methods on the same scenarios, seeds and decoding settings: paired differences
    /// against base with bootstrap intervals over scenarios (markdown, JSON, SVG).
    Compare(compare::Args),
    /// Join the shard folders of a sharded eval or compare (--shard I/N, Slurm arrays,
    /// Kubernetes Indexed Jobs) into one run, with the reports of an unsharded run.
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
