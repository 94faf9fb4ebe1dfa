//! `deepguard compare`: every method through the same pipeline stages and run folder (same
//! scenarios, seeds and decoding settings), then paired differences against the first method
//! with bootstrap intervals over scenarios (`deepguard_eval::compare`).

use crate::args::JsonArgs;
use crate::eval::{config, print_summary, RunArgs};
use anyhow::{bail, Result};
use deepguard_eval::compare::{write_tables, Groups};
use deepguard_eval::pipeline::{self, Stage};
use deepguard_eval::report;
use deepguard_eval::rerank::{method_of, Candidates};
use deepguard_eval::shard::Command;
use deepguard_methods::spec::MethodSpec;

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
    #[command(flatten)]
    pub config: crate::args::ConfigArgs,
}

pub fn run(a: Args) -> Result<()> {
    let methods: Vec<Box<dyn Candidates>> = a.methods.iter().map(|m| method_of(m, false)).collect();
    let mut names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    if names.len() != methods.len() {
        bail!("two --method specs give the same method name ({names:?}); each method needs its own folder");
    }
    let mut cfg = config(&a.run, Stage::Judge)?;
    let groups = groups(&a.methods, &cfg.data)?;
    let shard = a.run.shard.narrow(&mut cfg, Command::Compare { methods: methods.iter().map(|m| m.name()).collect(), resamples: a.resamples, groups: groups.clone() })?;
    let p = &cfg.params;
    eprintln!("compare {} methods on {} scenarios from {} (n={}, T={}, top-p={}, seed {})", methods.len(), cfg.scenarios.len(), cfg.data.display(), p.n, p.temperature, p.top_p, p.seed);
    for m in &methods {
        let t = pipeline::run(&cfg, m.as_ref(), &|| crate::load_model(&cfg.model))?;
        eprintln!("{}: generate {:.0}s, test {:.0}s, judge {:.0}s", m.name(), t.generate_secs, t.test_secs, t.judge_secs);
    }
    if let Some(m) = &shard {
        crate::shard::finished(m, &a.run.eval.out);
        return Ok(());
    }
    let judge = cfg.judge()?.name();
    let runs = methods.iter().map(|m| report::load_method(&cfg.method_dir(m.as_ref()), &cfg.scenarios, &judge)).collect::<Result<Vec<_>>>()?;
    report::write_all(&cfg.out, &runs, &cfg.skipped)?;
    for r in &runs {
        print_summary(r);
    }
    let (md, json) = write_tables(&cfg.out, &runs, a.resamples, &cfg.params, &judge, &groups)?;
    // Only guards and steering have something to report: no model is loaded for the others.
    let refs: Vec<&dyn deepguard_runtime::generate::Method> = methods.iter().zip(&a.methods).filter(|(_, s)| s.guard.is_some() || s.steer.is_some()).map(|(m, _)| m.as_ref() as &dyn deepguard_runtime::generate::Method).collect();
    let diagnostics = if refs.is_empty() { vec![] } else { deepguard_eval::diagnose::diagnose(&cfg.scenarios, &refs, &|| crate::load_model(&cfg.model))? };
    for (name, d) in &diagnostics {
        eprintln!("diagnostics of {name}:\n  {}", d.text.replace('\n', "\n  "));
    }
    // Beside compare.json, not in it: the table is the same whether the run was sharded or not
    // (`deepguard merge` has no model to diagnose with).
    let diagnostics = serde_json::Value::Object(diagnostics.into_iter().map(|(n, d)| (n, d.json)).collect());
    deepguard_runtime::files::write_atomic(&cfg.out.join("diagnostics.json"), serde_json::to_string_pretty(&diagnostics)?.as_bytes())?;
    a.json.write(&json)?;
    if a.json.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{md}");
    }
    eprintln!("compare: {} (.md, .json, .svg); per-method reports: {}", cfg.out.join("compare").display(), cfg.out.join("report").display());
    Ok(())
}

/// What `held-out` means here: CWEs absent from the compared guards' training data (as their
/// folders record it), else from SVEN's train split beside the benchmark (`deepguard train`'s
/// default data, which untrained methods are read against), else the benchmark's `untrain/`.
fn groups(specs: &[MethodSpec], data: &std::path::Path) -> Result<Groups> {
    let mut trained = std::collections::BTreeSet::new();
    let mut from = Vec::new();
    for g in specs.iter().filter_map(|s| s.guard.as_ref()) {
        let meta = deepguard_methods::guard::Guard::read_meta(&g.dir)?;
        if meta.cwes.is_empty() {
            continue;
        }
        trained.extend(meta.cwes.iter().filter_map(|c| deepguard_methods::data::Cwe::parse(c).ok()).map(|c| c.0));
        from.push(format!("guard {}", g.dir.display()));
    }
    if !from.is_empty() {
        return Ok(Groups { trained: Some(trained), source: from.join(", ") });
    }
    let sven = data.parent().map(|p| p.join("sven/train")).filter(|p| p.is_dir());
    if let Some(dir) = sven {
        for e in std::fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(c) = name.strip_suffix(".jsonl").and_then(|n| deepguard_methods::data::Cwe::parse(n).ok()) {
                trained.insert(c.0);
            }
        }
        if !trained.is_empty() {
            return Ok(Groups { trained: Some(trained), source: format!("SVEN train, {}", dir.display()) });
        }
    }
    Ok(Groups::default())
}
