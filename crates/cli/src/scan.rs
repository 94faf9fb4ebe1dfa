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
    #[arg(required_unless_present = "pairs")]
    pub files: Vec<PathBuf>,
    #[arg(long, conflicts_with = "files", help = PAIRS_HELP)]
    pub pairs: Vec<PathBuf>,
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

/// Whole functions of each pair (up to --max-file-tokens): S(fixed) > S(vulnerable) per CWE, next to
/// "the longer function is the fixed one".
fn pairs(a: &Args, model: &deepguard_runtime::Model, guard: &Guard) -> Result<()> {
    use deepguard_methods::data::{self, OnMalformed};
    let loaded = data::load(&a.pairs, OnMalformed::Skip)?;
    for s in &loaded.skipped {
        eprintln!("skipped {s}");
    }
    let pb = deepguard_methods::progress::Progress::new(loaded.pairs.len() as u64, "scan pairs", "pairs");
    // per CWE: pairs, fixed higher, longer-is-fixed, ties (equal scores: identical scored text)
    let mut by: std::collections::BTreeMap<String, (usize, usize, f64, usize)> = Default::default();
    let mut rows = Vec::new();
    for p in &loaded.pairs {
        let f = scan::scan(guard, model, &p.source, &p.fixed, a.max_file_tokens)?;
        let v = scan::scan(guard, model, &p.source, &p.vulnerable, a.max_file_tokens)?;
        let e = by.entry(p.cwe.slug()).or_default();
        e.0 += 1;
        e.1 += (f.score > v.score) as usize;
        e.2 += if f.total_tokens > v.total_tokens { 1.0 } else if f.total_tokens == v.total_tokens { 0.5 } else { 0.0 };
        e.3 += (f.score == v.score) as usize;
        rows.push(serde_json::json!({"source": p.source, "cwe": p.cwe.slug(), "fixed": f.score, "vulnerable": v.score, "fixed_tokens": f.total_tokens, "vulnerable_tokens": v.total_tokens}));
        pb.inc(1);
    }
    pb.finish();
    let (n, right, longer, ties) = by.values().fold((0, 0, 0.0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1, acc.2 + x.2, acc.3 + x.3));
    if a.json {
        println!("{}", serde_json::json!({"pairs": rows, "fixed_higher": right as f64 / n.max(1) as f64, "ties": ties, "length_baseline": longer / n.max(1) as f64, "max_tokens": a.max_file_tokens}));
        return Ok(());
    }
    println!("| CWE | pairs | S(fixed) > S(vulnerable) | longer side is fixed | ties (same scored text) |\n|---|---|---|---|---|");
    for (c, (n, r, l, t)) in &by {
        println!("| {c} | {n} | {:.1}% ({r}) | {:.1}% | {t} |", 100.0 * *r as f64 / *n as f64, 100.0 * l / *n as f64);
    }
    println!("| all | {n} | {:.1}% ({right}) | {:.1}% | {ties} |", 100.0 * right as f64 / n.max(1) as f64, 100.0 * longer / n.max(1) as f64);
    if ties > 0 {
        eprintln!("{ties} pairs tie: their first {} tokens are the same on both sides (raise --max-file-tokens to reach the change)", a.max_file_tokens);
    }
    Ok(())
}
