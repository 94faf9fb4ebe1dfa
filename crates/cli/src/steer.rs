use crate::args::{JSON_OUT_HELP, L2_HELP, OUT_HELP, POOLING_HELP, VAL_HELP};
use crate::probe::{read_report, DataArgs};
use anyhow::{bail, Context, Result};
use deepguard_methods::data;
use deepguard_methods::probe::Pooling;
use deepguard_methods::steer;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Build one steering vector per CWE (+ one over all pairs) from paired data: --out gets
    /// cwe-XXX.gguf per CWE, all.gguf and vectors.json. The probes stored with the vectors route
    /// prompts (probe-then-steer, prompt:cwe).
    Build(BuildArgs),
    /// Try layers x alphas on validation pairs and report the best.
    Sweep(SweepArgs),
    /// Where steering would send each of a benchmark's prompts: probe-then-steer's routing
    /// (steered, to which CWE, left alone), as `compare` reports it.
    Route(RouteArgs),
}

#[derive(clap::Args)]
pub struct RouteArgs {
    /// The vectors as `--steer` names them: DIR:auto, DIR:CWE or FILE.gguf.
    pub vectors: String,
    #[command(flatten)]
    pub model: crate::args::ModelArgs,
    #[command(flatten)]
    pub bench: crate::args::BenchArgs,
    #[command(flatten)]
    pub json: crate::args::JsonArgs,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// What the vectors contrast: `code` (the secure vs the vulnerable code of each pair, at the
    /// end of its window) or `instruction` (the paper's: the code before the change under a
    /// secure vs an insecure "fast, legacy" instruction, at the last prompt token).
    #[arg(long, value_enum, default_value = "code")]
    pub contrast: Contrast,
    /// Steer this decoder block (0-based output of block L = llama.cpp direction.L), `last`, or
    /// `best` (a probe on these activations: accuracy within --tol of the peak, then the largest
    /// relative direction norm) [default: for `code`, a third of the way up the model, block 8
    /// of 24 for Qwen2.5-Coder-0.5B, chosen by `compare` on generated code; for `instruction`,
    /// the last block, the paper's layer; or --probe].
    #[arg(long, conflicts_with = "probe")]
    pub layer: Option<LayerChoice>,
    /// Choose the layer from this probe.json (accuracy within --tol of the peak, then the largest
    /// relative direction norm).
    #[arg(long)]
    pub probe: Option<PathBuf>,
    /// With --probe: blocks whose probe accuracy is within this of the peak are candidates; the
    /// one with the largest relative direction norm is chosen.
    #[arg(long, default_value_t = 0.03)]
    pub tol: f64,
    #[arg(long, value_enum, default_value = "last", help = POOLING_HELP)]
    pub pooling: Pooling,
    #[arg(long, default_value_t = 0.1, help = L2_HELP)]
    pub l2: f64,
    #[arg(long, short, default_value = "runs/steer", help = OUT_HELP)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Contrast {
    Code,
    Instruction,
}

/// `--layer`: a block number, `last` or `best`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerChoice {
    Block(usize),
    Last,
    Best,
}

impl std::str::FromStr for LayerChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "last" => Ok(LayerChoice::Last),
            "best" => Ok(LayerChoice::Best),
            n => n.parse().map(LayerChoice::Block).map_err(|_| format!("`{n}` is not a block number, `last` or `best`")),
        }
    }
}

#[derive(clap::Args)]
pub struct SweepArgs {
    /// Training pairs (the vectors are built from these).
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, required = true, help = VAL_HELP)]
    pub val: Vec<PathBuf>,
    /// Layers to try (comma-separated); default: every 4th block from 4, and the last.
    #[arg(long)]
    pub layers: Option<String>,
    /// Steering strengths to try (comma list).
    #[arg(long, default_value = "1,2,4,8")]
    pub alphas: String,
    #[arg(long, value_enum, default_value = "last", help = POOLING_HELP)]
    pub pooling: Pooling,
    /// Use at most N validation pairs per CWE.
    #[arg(long)]
    pub max_val_pairs_per_cwe: Option<usize>,
    /// Largest acceptable fluency cost (nats per unchanged token).
    #[arg(long, default_value_t = 0.1)]
    pub max_cost: f64,
    #[arg(long, value_name = "FILE", help = JSON_OUT_HELP)]
    pub json_out: Option<PathBuf>,
}

pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Build(a) => build(a),
        Cmd::Sweep(a) => sweep(a),
        Cmd::Route(a) => route(a),
    }
}

fn route(a: RouteArgs) -> Result<()> {
    let (_, scenarios, _) = a.bench.load()?;
    let model = crate::load_model(&a.model.model)?;
    let prompts = deepguard_eval::diagnose::prompts(&model, &scenarios)?;
    let d = {
        let (path, sel) = deepguard_methods::steer::parse_steer_arg(&a.vectors)?;
        deepguard_methods::diagnostics::guided(&model, None, Some((&path, &sel)), &prompts)?
    }.expect("steering always reports");
    a.json.write(&d.json)?;
    if a.json.json {
        println!("{}", serde_json::to_string_pretty(&d.json)?);
    } else {
        println!("{}", d.text);
    }
    Ok(())
}

fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>> {
    s.split(',').map(|x| x.trim().parse::<T>().map_err(|_| anyhow::anyhow!("--{what}: `{x}` is not a number"))).collect()
}

fn build(a: BuildArgs) -> Result<()> {
    use deepguard_methods::steer_instruct;
    let pooling = if a.contrast == Contrast::Instruction { Pooling::Last } else { a.pooling };
    let report = a.probe.as_ref().map(|p| read_report(p)).transpose()?;
    let (pairs, _) = a.data.pairs()?;
    let model = crate::load_model(&a.data.model.model)?;
    let n = model.cfg().n_layers;
    if let Some(r) = &report {
        if r.fingerprint != model.info.fingerprint {
            bail!("{}: probe report is for model fingerprint {}, not {}", a.probe.as_ref().unwrap().display(), r.fingerprint, model.info.fingerprint);
        }
    }
    let acts = match a.contrast {
        Contrast::Code => a.data.activations(&model, &pairs)?,
        Contrast::Instruction => {
            let bar = deepguard_methods::progress::Progress::new(pairs.len() as u64, "instruction prompts", "pairs");
            let acts = steer_instruct::collect(&model, &pairs, &steer_instruct::Instructions::default(), a.data.window, |_| bar.inc(1))?;
            bar.finish();
            acts
        }
    };
    let layer = match (a.layer, &report) {
        (Some(LayerChoice::Block(l)), _) => l,
        (Some(LayerChoice::Last), _) => steer_instruct::paper_layer(n),
        (Some(LayerChoice::Best), _) => {
            let all: Vec<usize> = (0..acts.n_pairs()).collect();
            let g = deepguard_methods::probe::probe_group(&acts, pooling, &all, "all", &deepguard_methods::probe::ProbeSettings::default());
            let l = steer::choose_layer(&g, a.tol);
            eprintln!("layer {l} chosen by a probe on these activations: accuracy {:.3} (peak {:.3} at {}), relative norm {:.3}", g.layers[l].accuracy, g.peak().accuracy, g.peak().layer, g.layers[l].rel_norm);
            l
        }
        (None, Some(r)) => {
            let g = r.pooled(pooling).with_context(|| format!("{}: has no `{}` pooling results", a.probe.as_ref().unwrap().display(), pooling.name()))?;
            let l = steer::choose_layer(g, a.tol);
            let s = &g.layers[l];
            eprintln!("layer {l} chosen from the probe: accuracy {:.3} (peak {:.3} at {}), relative norm {:.3}", s.accuracy, g.peak().accuracy, g.peak().layer, s.rel_norm);
            l
        }
        (None, None) if a.contrast == Contrast::Instruction => {
            let l = steer_instruct::paper_layer(n);
            eprintln!("steering block {l} (the paper's layer: the last of the model's {n} blocks)");
            l
        }
        (None, None) => {
            let l = steer::default_layer(n);
            eprintln!("steering block {l} (the default: a third of the way up the model's {n} blocks)");
            l
        }
    };
    let vectors = match a.contrast {
        Contrast::Code => steer::build(&model, &acts, pooling, layer, &a.data.spec(), a.l2)?,
        Contrast::Instruction => steer_instruct::build(&model, &acts, layer, a.data.window, a.l2)?,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut summary = Vec::new();
    for v in &vectors {
        let path = a.out.join(steer::file_name(v.cwe));
        v.save(&path)?;
        println!("{}  {:>8}  layer {}  {} pairs  |v| {:.2}", path.display(), v.cwe.map(|c| c.to_string()).unwrap_or("all".into()), v.layer, v.n_pairs, v.norm());
        summary.push(serde_json::json!({"file": path, "vector": v, "norm": v.norm()}));
    }
    deepguard_runtime::files::write_atomic(&a.out.join("vectors.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(())
}

fn sweep(a: SweepArgs) -> Result<()> {
    let pooling = a.pooling;
    let alphas: Vec<f64> = parse_list(&a.alphas, "alphas")?;
    let (pairs, _) = a.data.pairs()?;
    let policy = a.data.on_malformed;
    let mut val = data::load(&a.val, policy)?.pairs;
    if let Some(n) = a.max_val_pairs_per_cwe {
        val = data::limit_per_cwe(val, n);
    }
    let model = crate::load_model(&a.data.model.model)?;
    let n = model.cfg().n_layers;
    let layers: Vec<usize> = match &a.layers {
        Some(s) => parse_list(s, "layers")?,
        None => (4..n).step_by(4).chain(std::iter::once(n - 1)).collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
    };
    let acts = a.data.activations(&model, &pairs)?;
    let bar = deepguard_methods::progress::Progress::new(val.len() as u64, "sweep", "pairs");
    let cells = steer::sweep(&model, &acts, pooling, &val, &a.data.spec(), &layers, &alphas, |i| bar.set_position(i as u64))?;
    bar.set_position(val.len() as u64);
    bar.finish();
    println!("| layer | alpha | security gain (nats/token) | fluency cost (nats/token) |\n|---|---|---|---|");
    for c in &cells {
        println!("| {} | {} | {:+.4} | {:+.4} |", c.layer, c.alpha, c.security_gain, c.fluency_cost);
    }
    match steer::best_cell(&cells, a.max_cost) {
        Some(b) => println!("\nbest: layer {} alpha {} (security gain {:+.4}, fluency cost {:+.4}, {} validation pairs)", b.layer, b.alpha, b.security_gain, b.fluency_cost, b.n_pairs),
        None => println!("\nno cell keeps the fluency cost under {}", a.max_cost),
    }
    if let Some(p) = &a.json_out {
        deepguard_runtime::files::write_atomic(p, serde_json::to_string_pretty(&cells)?.as_bytes())?;
    }
    Ok(())
}
