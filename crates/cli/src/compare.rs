//! `deepguard compare`: every method through the same pipeline stages and run folder (same
//! scenarios, seeds and decoding settings), then paired differences against the first method
//! with bootstrap intervals over scenarios (`deepguard_eval::compare`).

use crate::args::JsonArgs;
use crate::eval::{config, print_summary, RunArgs};
use anyhow::{bail, Context, Result};
use deepguard_eval::compare::{compare, markdown, svg};
use deepguard_eval::pipeline::{self, Stage};
use deepguard_eval::report;
use deepguard_eval::rerank::{By, Rerank};
use deepguard_methods::guided::Guided;
use deepguard_methods::prior::BiasRule;
use deepguard_runtime::files::write_atomic;
use deepguard_runtime::generate::{Base, Method};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A method to compare (repeatable; the first is the baseline): `base`,
    /// `steer:DIR:CWE|auto[@ALPHA]` or `steer:FILE.gguf[@ALPHA]` (steering, default alpha 2),
    /// `guard:DIR[@STRENGTH]` (DeepGuard, default strength 1), `rerank:K[:static|analyzer|both]`
    /// (keep the most secure of K candidates by the static judge, the guard's analyzer, or
    /// both), or several joined by `+` (`guard:DIR+steer:DIR:auto@2`, `guard:DIR+rerank:4:both`).
    #[arg(long = "method", required = true, value_name = "SPEC")]
    pub methods: Vec<String>,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub json: JsonArgs,
}

/// Parses one `--method` spec.
pub fn parse_method(spec: &str) -> Result<Box<dyn Method>> {
    if spec == "base" {
        return Ok(Box::new(Base));
    }
    let (mut steer, mut guard, mut rerank) = (None, None, None);
    for part in spec.split('+') {
        if let Some(rest) = part.strip_prefix("rerank:") {
            let (k, by) = rest.split_once(':').unwrap_or((rest, "static"));
            let k: usize = k.parse().ok().filter(|&k| k >= 2).with_context(|| format!("--method {spec}: rerank:{rest}: expected a number of candidates >= 2"))?;
            rerank = Some((k, By::parse(by).with_context(|| format!("--method {spec}"))?));
            continue;
        }
        let (body, strength) = match part.rsplit_once('@') {
            Some((b, s)) => (b, Some(s.parse::<f64>().with_context(|| format!("--method {spec}: {s:?} is not a number"))?)),
            None => (part, None),
        };
        if let Some(rest) = body.strip_prefix("steer:") {
            steer = Some((rest.to_string(), strength.unwrap_or(deepguard_methods::steer::DEFAULT_ALPHA)));
        } else if let Some(rest) = body.strip_prefix("guard:") {
            guard = Some((PathBuf::from(rest), BiasRule::Paper, strength.unwrap_or(1.0) as f32));
        } else {
            bail!("--method {spec}: {part:?} is not base, steer:..., guard:... or rerank:K");
        }
    }
    let method: Box<dyn Method> = if steer.is_none() && guard.is_none() { Box::new(Base) } else { Box::new(Guided::new(steer, guard, false)) };
    Ok(match rerank {
        Some((k, by)) => Box::new(Rerank { inner: method, k, by }),
        None => method,
    })
}

pub fn run(a: Args) -> Result<()> {
    let methods: Vec<Box<dyn Method>> = a.methods.iter().map(|m| parse_method(m)).collect::<Result<_>>()?;
    let mut names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    if names.len() != methods.len() {
        bail!("two --method specs give the same method name ({names:?}); each method needs its own folder");
    }
    let mut run = a.run.clone();
    run.eval.until = Stage::Judge;
    let cfg = config(&run)?;
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
    let refs: Vec<&dyn deepguard_runtime::generate::Method> = methods.iter().map(|m| m.as_ref()).collect();
    let diagnostics = deepguard_eval::diagnose::diagnose(&cfg.scenarios, &refs, &|| crate::load_model(&cfg.model))?;
    for (name, d) in &diagnostics {
        eprintln!("diagnostics of {name}:\n  {}", d.text.replace('\n', "\n  "));
    }
    let diagnostics: serde_json::Map<String, serde_json::Value> = diagnostics.into_iter().map(|(n, d)| (n, d.json)).collect();
    let json = serde_json::json!({"baseline": runs[0].method, "judge": judge, "sampling": cfg.params, "methods": diffs, "diagnostics": diagnostics});
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
