use anyhow::{bail, Context, Result};
use deepguard_methods::data::{self, Align, OnMalformed, Pair, WindowSpec};
use deepguard_methods::probe::{self, Activations, Pooling, ProbeReport, ProbeSettings};
use crate::args::{ModelArgs, CACHE_HELP, MAX_PAIRS_HELP, ON_MALFORMED_HELP, L2_HELP, NO_CACHE_HELP, OUT_HELP, PAIRS_HELP, POOLING_HELP, WINDOW_HELP};
use deepguard_runtime::Model;
use std::path::{Path, PathBuf};

/// Data, window and cache options shared by `probe` and `steer`.
#[derive(clap::Args, Clone)]
pub struct DataArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, alias = "data", required = true, help = PAIRS_HELP)]
    pub pairs: Vec<PathBuf>,
    #[arg(long, default_value_t = 128, help = WINDOW_HELP)]
    pub window: usize,
    /// `end`: the window ends with the last changed token; `center`: centred on the change.
    #[arg(long, value_enum, default_value = "end")]
    pub align: Align,
    /// Cut both sides of a pair to the same token count (removes length as a cue).
    #[arg(long)]
    pub equal_length: bool,
    #[arg(long, help = MAX_PAIRS_HELP)]
    pub max_pairs_per_cwe: Option<usize>,
    #[arg(long, value_enum, default_value = "skip", help = ON_MALFORMED_HELP)]
    pub on_malformed: OnMalformed,
    #[arg(long, default_value = ".cache/activations", help = CACHE_HELP)]
    pub cache: PathBuf,
    #[arg(long, help = NO_CACHE_HELP)]
    pub no_cache: bool,
}

impl DataArgs {
    pub fn spec(&self) -> WindowSpec {
        WindowSpec { budget: self.window, align: self.align, equal_length: self.equal_length }
    }

    /// Loads the pairs (reporting skipped lines on stderr).
    pub fn pairs(&self) -> Result<(Vec<Pair>, usize)> {
        let loaded = data::load(&self.pairs, self.on_malformed)?;
        for s in &loaded.skipped {
            eprintln!("skipped {s}");
        }
        let pairs = match self.max_pairs_per_cwe {
            Some(n) => data::limit_per_cwe(loaded.pairs, n),
            None => loaded.pairs,
        };
        if pairs.is_empty() {
            bail!("no pairs in {}", self.pairs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        }
        Ok((pairs, loaded.skipped.len()))
    }

    pub fn activations(&self, model: &Model, pairs: &[Pair]) -> Result<Activations> {
        let cache = if self.no_cache { None } else { Some(self.cache.as_path()) };
        let t = std::time::Instant::now();
        let a = probe::collect(model, pairs, &self.spec(), cache, true)?;
        eprintln!("activations of {} pairs ready in {:.1}s", pairs.len(), t.elapsed().as_secs_f64());
        Ok(a)
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "last,mean,changed", help = POOLING_HELP)]
    pub pooling: Vec<Pooling>,
    /// Cross-validation folds (both sides of a pair always in the same fold).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Random seed of the fold assignment.
    #[arg(long, alias = "seed", default_value_t = 42)]
    pub fold_seed: u64,
    #[arg(long, default_value_t = 0.1, help = L2_HELP)]
    pub l2: f64,
    /// Per-CWE probes need at least this many pairs.
    #[arg(long, default_value_t = 8)]
    pub min_pairs_per_cwe: usize,
    /// Only the length baselines (tokenisation, no model pass), printed as a table.
    #[arg(long)]
    pub baselines_only: bool,
    #[arg(long, short, default_value = "runs/probe", help = OUT_HELP)]
    pub out: PathBuf,
}


pub fn run(a: Args) -> Result<()> {
    let poolings = a.pooling.clone();
    if a.folds < 2 {
        bail!("--folds must be at least 2");
    }
    let (pairs, skipped) = a.data.pairs()?;
    let model = crate::load_model(&a.data.model.model)?;
    let settings = ProbeSettings { folds: a.folds, seed: a.fold_seed, l2: a.l2, min_pairs_per_cwe: a.min_pairs_per_cwe };
    if a.baselines_only {
        return baselines(&model, &pairs, &a.data, &settings);
    }
    let acts = a.data.activations(&model, &pairs)?;
    let mut reports = Vec::new();
    for p in poolings {
        let t = std::time::Instant::now();
        reports.push(probe::probe_all(&acts, p, &settings, |g| eprintln!("probing {} pooling, {g}", p.name())));
        eprintln!("{} pooling probed in {:.1}s", p.name(), t.elapsed().as_secs_f64());
    }
    let report = ProbeReport {
        model: a.data.model.model.clone(),
        fingerprint: model.info.fingerprint.clone(),
        n_layers: acts.n_layers,
        hidden: acts.hidden,
        data: a.data.pairs.iter().map(|p| p.display().to_string()).collect(),
        n_pairs: pairs.len(),
        skipped_lines: skipped,
        window: a.data.spec(),
        settings,
        poolings: reports,
    };
    write_report(&a.out, &report)?;
    let md = probe::markdown(&report);
    print!("{md}");
    eprintln!("wrote {}/probe.json, probe.md, probe.svg", a.out.display());
    Ok(())
}

pub fn write_report(out: &Path, r: &ProbeReport) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    deepguard_runtime::files::write_atomic(&out.join("probe.json"), serde_json::to_string_pretty(r)?.as_bytes())?;
    deepguard_runtime::files::write_atomic(&out.join("probe.md"), probe::markdown(r).as_bytes())?;
    deepguard_runtime::files::write_atomic(&out.join("probe.svg"), deepguard_methods::plot::probe_svg(r).as_bytes())
}

/// Reads a probe.json written by `deepguard probe`.
pub fn read_report(path: &Path) -> Result<ProbeReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read probe report {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}:{}: not a probe report: {e}", path.display(), e.line()))
}

fn baselines(model: &Model, pairs: &[Pair], d: &DataArgs, s: &ProbeSettings) -> Result<()> {
    let (tokens, full) = probe::token_counts(model, pairs, &d.spec())?;
    println!("| group | pairs | longer-is-fixed (window) | longer-is-fixed (whole) | equal-length windows | count probe acc. | count probe AUC |\n|---|---|---|---|---|---|---|");
    let all: Vec<usize> = (0..pairs.len()).collect();
    let mut groups = vec![("all".to_string(), all.clone())];
    for (c, _) in data::cwes(pairs) {
        groups.push((c.to_string(), all.iter().copied().filter(|&i| pairs[i].cwe == c).collect()));
    }
    for (name, idx) in groups {
        let b = probe::length_baseline(&tokens, &full, &idx, s);
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            idx.len(),
            b.longer_is_fixed,
            b.longer_is_fixed_full,
            b.equal_length_pairs,
            b.count_probe.accuracy,
            b.count_probe.auc
        );
    }
    Ok(())
}
