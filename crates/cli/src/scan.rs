use anyhow::{Context, Result};
use deepguard_methods::guard::Guard;
use deepguard_methods::scan;
use crate::args::{ModelArgs, GUARD_HELP, JSON_HELP, PAIRS_HELP};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Score every token of a source file with a trained guard's analyzer. Prints the code with
/// risky tokens highlighted, the risky lines, and the file's sequence score (--json: token spans
/// and scores). With --pairs instead of files: score both sides of every pair and report how often
/// the fixed side scores higher.
#[derive(clap::Args)]
pub struct Args {
    /// Source files to scan.
    #[arg(required_unless_present_any = ["pairs", "prompts"])]
    pub files: Vec<PathBuf>,
    #[arg(long, conflicts_with = "files", help = PAIRS_HELP)]
    pub pairs: Vec<PathBuf>,
    /// Instead of files: score every prompt of a benchmark (--data, -s) and print the spread of
    /// s̄_prompt, the score that scales the guard's logit bias.
    #[arg(long, conflicts_with_all = ["files", "pairs"])]
    pub prompts: bool,
    #[command(flatten)]
    pub bench: crate::args::BenchArgs,
    #[arg(long, short, help = GUARD_HELP)]
    pub guard: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens scored below this are highlighted.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    /// Score at most this many tokens per file (or per side of a pair).
    #[arg(long, alias = "max-tokens", default_value_t = 1024)]
    pub max_file_tokens: usize,
    /// Also write an HTML page (one file: this path; several: PATH/<name>.html).
    #[arg(long)]
    pub html: Option<PathBuf>,
    #[arg(long, help = JSON_HELP)]
    pub json: bool,
    /// Only print the score line per file.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut model = crate::load_model(&a.model.model)?;
    let guard = Guard::load(&a.guard, &model)?;
    guard.attach(&mut model)?;
    if !a.pairs.is_empty() {
        return pairs(&a, &model, &guard);
    }
    if a.prompts {
        return prompts(&a, &model, &guard);
    }
    let color = std::io::stdout().is_terminal();
    for f in &a.files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let name = f.display().to_string();
        let r = scan::scan(&guard, &model, &name, &text, a.max_file_tokens)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            if !a.quiet {
                print!("{}", scan::render_ansi(&r, &text, a.threshold, color));
                for (line, s) in scan::risky_lines(&r, &text, a.threshold) {
                    println!("  line {line}: lowest token score {s:.3}");
                }
            }
            let cut = if r.scored_tokens < r.total_tokens { format!(" (first {} of {} tokens)", r.scored_tokens, r.total_tokens) } else { String::new() };
            println!("{name}: sequence score {:.4}{cut}", r.score);
        }
        if let Some(h) = &a.html {
            let path = if a.files.len() == 1 { h.clone() } else { h.join(format!("{}.html", f.file_name().unwrap_or_default().to_string_lossy())) };
            if let Some(p) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(&path, scan::render_html(&r, &text, a.threshold)).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Whole functions of each pair (up to --max-file-tokens): S(fixed) > S(vulnerable) per CWE, on all
/// pairs and on the length-matched ones, next to "the longer function is the fixed one".
fn pairs(a: &Args, model: &deepguard_runtime::Model, guard: &Guard) -> Result<()> {
    use deepguard_methods::data::{self, OnMalformed};
    use deepguard_methods::diagnostics::{score_pairs, AnalyzerAccuracy};
    let loaded = data::load(&a.pairs, OnMalformed::Skip)?;
    for s in &loaded.skipped {
        eprintln!("skipped {s}");
    }
    let pb = deepguard_methods::progress::Progress::new(loaded.pairs.len() as u64, "scan pairs", "pairs");
    let scores = score_pairs(guard, model, &loaded.pairs, a.max_file_tokens, || pb.inc(1))?;
    pb.finish();
    let acc = AnalyzerAccuracy::of(&scores);
    if a.json {
        println!("{}", serde_json::json!({"pairs": scores, "accuracy": acc, "max_tokens": a.max_file_tokens}));
        return Ok(());
    }
    print!("{}", acc.markdown());
    if acc.all.ties > 0 {
        eprintln!("{} pairs tie: their first {} tokens are the same on both sides (raise --max-file-tokens to reach the change)", acc.all.ties, a.max_file_tokens);
    }
    Ok(())
}

/// s̄_prompt of every benchmark prompt and its spread.
fn prompts(a: &Args, model: &deepguard_runtime::Model, guard: &Guard) -> Result<()> {
    use deepguard_methods::diagnostics::score_prompts;
    let (_, scenarios, _) = a.bench.load()?;
    let ps = deepguard_eval::diagnose::prompts(model, &scenarios)?;
    let s = score_prompts(guard, model, &ps)?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        for (id, x) in &s.prompts {
            println!("{id}: s̄_prompt {x:.4}");
        }
        println!("{}", s.line());
    }
    Ok(())
}
