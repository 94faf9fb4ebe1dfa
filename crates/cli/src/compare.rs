//! `deepguard compare`: every method through the same pipeline stages and run folder (same
//! scenarios, seeds and decoding settings), then paired differences against the first method
//! with bootstrap intervals over scenarios (`deepguard_eval::compare`).

use crate::args::JsonArgs;
use crate::eval::{config, print_summary, RunArgs};
use anyhow::{bail, Result};
use deepguard_eval::compare::{compare, markdown, svg};
use deepguard_eval::pipeline::{self, Stage};
use deepguard_eval::report;
use deepguard_eval::rerank::{method_of, Candidates};
use deepguard_methods::spec::MethodSpec;
use deepguard_runtime::files::write_atomic;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long = "method", required = true, value_name = "SPEC", help = deepguard_methods::spec::HELP)]
    pub methods: Vec<MethodSpec>,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub json: JsonArgs,
}

pub fn run(a: Args) -> Result<()> {
    let methods: Vec<Box<dyn Candidates>> = a.methods.iter().map(|m| method_of(m, false)).collect();
    let mut names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    if names.len() != methods.len() {
        bail!("two --method specs give the same method name ({names:?}); each method needs its own folder");
    }
    let cfg = config(&a.run, Stage::Judge)?;
    let p = &cfg.params;
    eprintln!("compare {} methods on {} scenarios from {} (n={}, T={}, top-p={}, seed {})", methods.len(), cfg.scenarios.len(), cfg.data.display(), p.n, p.temperature, p.top_p, p.seed);
    for m in &methods {
        let t = pipeline::run(&cfg, m.as_ref(), &|| crate::load_model(&cfg.model))?;
        eprintln!("{}: generate {:.0}s, test {:.0}s, judge {:.0}s", m.name(), t.generate_secs, t.test_secs, t.judge_secs);
    }
    let judge = cfg.judge()?.name();
    let runs = methods.iter().map(|m| report::load_method(&cfg.method_dir(m.as_ref()), &cfg.scenarios, &judge)).collect::<Result<Vec<_>>>()?;
    report::write_all(&cfg.out, &runs, &cfg.skipped)?;
    for r in &runs {
        print_summary(r);
    }
    let diffs: Vec<_> = runs[1..].iter().map(|r| compare(&runs[0], r, a.resamples, cfg.params.seed)).collect();
    let md = markdown(&runs[0].method, &diffs, &judge);
    write_atomic(&cfg.out.join("compare.md"), md.as_bytes())?;
    write_atomic(&cfg.out.join("compare.svg"), svg(&diffs).as_bytes())?;
    let json = serde_json::json!({"baseline": runs[0].method, "judge": judge, "sampling": cfg.params, "methods": diffs});
    write_atomic(&cfg.out.join("compare.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    a.json.write(&json)?;
    if a.json.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{md}");
    }
    eprintln!("compare: {} (.md, .json, .svg); per-method reports: {}", cfg.out.join("compare").display(), cfg.out.join("report").display());
    Ok(())
}
