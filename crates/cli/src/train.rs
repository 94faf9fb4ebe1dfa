use anyhow::{bail, Context, Result};
use deepguard_methods::aggregator::Mode;
use deepguard_methods::data::{self, OnMalformed};
use deepguard_methods::prior::PriorName;
use deepguard_methods::train::{self, RunOptions, TrainConfig};
use deepguard_runtime::lora::Proj;
use crate::args::{ModelArgs, CACHE_HELP, MAX_PAIRS_HELP, NO_CACHE_HELP, ON_MALFORMED_HELP, OUT_HELP, PAIRS_HELP, VAL_HELP, WINDOW_HELP};
use deepguard_runtime::models::shared_data;
use std::path::PathBuf;

/// Train DeepGuard (LoRA adapters + multi-layer aggregator + security analyzer) on paired
/// vulnerable/fixed code. Writes the adapters in PEFT format, guard.safetensors (aggregator,
/// analyzer, T_stats), metrics.jsonl, loss.svg and train_report.json into --out. Pairs default
/// to SVEN's train and val splits (../shared/data/sven/{train,val} beside deepguard's home); add
/// ../shared/data/safecoder/train with --pairs for SafeCoder.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, alias = "train", help = PAIRS_HELP)]
    pub pairs: Vec<PathBuf>,
    #[arg(long, help = VAL_HELP)]
    pub val: Vec<PathBuf>,
    #[arg(long, short, default_value = "runs/guard", help = OUT_HELP)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint (same options).
    #[arg(long)]
    pub resume: bool,
    /// Epochs (early stopping may end sooner). One epoch of the defaults takes about 45 min on 2
    /// CPU cores; the paper trains up to 5.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Early stopping patience in epochs.
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value_t = 128, help = WINDOW_HELP)]
    pub window: usize,
    /// Aggregator: attention over the top layers, their plain mean, or the last layer only.
    #[arg(long, value_enum, default_value = "attention")]
    pub aggregator: Mode,
    /// Number of top layers the aggregator reads.
    #[arg(long, default_value_t = 4)]
    pub agg_layers: usize,
    /// Blocks with adapters: `topK` (the K top blocks; all of them when the model has fewer),
    /// `all`, or a list like 20,21,22,23.
    /// Frozen blocks below the adapters run once per example and are cached.
    #[arg(long, default_value = "top4")]
    pub lora_layers: String,
    /// Projections with adapters (default: q,v for Qwen, q,k,v,o for Llama).
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// LoRA rank r of the adapters.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA scaling alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    /// Dropout on the adapters' input during training.
    #[arg(long, default_value_t = 0.1)]
    pub lora_dropout: f32,
    /// No adapters: train only the aggregator and the analyzer on the frozen model's features.
    #[arg(long)]
    pub analyzer_only: bool,
    /// Learning rate of the adapters (the paper's 2e-5 barely moves LoRA in one epoch of 45
    /// steps; 3e-4 is a usual LoRA rate).
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Learning rate of the aggregator and analyzer (new, randomly initialised heads).
    #[arg(long, default_value_t = 1e-3)]
    pub head_lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Pairs per micro-batch; a step uses batch x accum pairs.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Gradient accumulation: batches per optimizer step.
    #[arg(long, default_value_t = 2)]
    pub accum: usize,
    /// Share of the optimizer steps spent warming the learning rate up (then linear decay).
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f64,
    /// Gradient clipping (global L2 norm; 0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Weight of the margin loss L_sec.
    #[arg(long, default_value_t = 0.5)]
    pub w_sec: f64,
    /// Weight of the KL term L_kl (against the model without adapters).
    #[arg(long, default_value_t = 1.0)]
    pub w_kl: f64,
    /// Margin delta of L_sec.
    #[arg(long, default_value_t = 0.5)]
    pub margin: f64,
    /// T_stats rule: `counts` (order-free) or `running` (the reference code's).
    #[arg(long, value_enum, default_value = "counts")]
    pub prior: PriorName,
    /// Random seed of the training (initialisation, data order, dropout); a resumed run
    /// continues the same sequence.
    #[arg(long, alias = "seed", default_value_t = 42)]
    pub init_seed: u64,
    #[arg(long, help = MAX_PAIRS_HELP)]
    pub max_pairs_per_cwe: Option<usize>,
    #[arg(long, value_enum, default_value = "skip", help = ON_MALFORMED_HELP)]
    pub on_malformed: OnMalformed,
    #[arg(long, default_value = ".cache/guard-features", help = CACHE_HELP)]
    pub cache: PathBuf,
    #[arg(long, help = NO_CACHE_HELP)]
    pub no_cache: bool,
    /// Checkpoint every N optimizer steps (and at each epoch end).
    #[arg(long, default_value_t = 5)]
    pub checkpoint_every: usize,
    /// Skip the validation pass before the first step.
    #[arg(long)]
    pub no_val_at_start: bool,
    /// Only compute the feature cache, then stop.
    #[arg(long)]
    pub features_only: bool,
    /// Stop (with a checkpoint) after N optimizer steps in this invocation.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Skip the diagnostics after training (the analyzer on whole and length-matched val pairs,
    /// the spread of s̄_prompt over the benchmark's prompts).
    #[arg(long)]
    pub no_diagnostics: bool,
    /// The benchmark whose prompts the diagnostics score.
    #[command(flatten)]
    pub bench: crate::args::BenchArgs,
    #[command(flatten)]
    pub config: crate::args::ConfigArgs,
}

fn lora_layers(spec: &str, n: usize) -> Result<Vec<usize>> {
    if spec == "all" {
        return Ok((0..n).collect());
    }
    if let Some(k) = spec.strip_prefix("top") {
        let k: usize = k.parse().map_err(|_| anyhow::anyhow!("--lora-layers {spec}: expected topK, all or a list"))?;
        if k == 0 {
            bail!("--lora-layers {spec}: at least one block");
        }
        if k > n {
            eprintln!("--lora-layers {spec}: the model has {n} blocks; adapting all of them");
        }
        return Ok((n - k.min(n)..n).collect());
    }
    let v: Vec<usize> = spec.split(',').map(|s| s.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|_| anyhow::anyhow!("--lora-layers {spec}: expected topK, all or a list like 20,21"))?;
    if let Some(b) = v.iter().find(|&&b| b >= n) {
        bail!("--lora-layers: block {b} does not exist (the model has {n})");
    }
    Ok(v)
}

pub fn run(a: Args) -> Result<()> {
    let mut model = crate::load_model(&a.model.model)?;
    let policy = a.on_malformed;
    let load = |p: &[PathBuf]| -> Result<Vec<data::Pair>> {
        let l = data::load(p, policy)?;
        for s in &l.skipped {
            eprintln!("skipped {s}");
        }
        Ok(match a.max_pairs_per_cwe {
            Some(n) => data::limit_per_cwe(l.pairs, n),
            None => l.pairs,
        })
    };
    let or_sven = |v: &[PathBuf], split: &str| if v.is_empty() { vec![shared_data(&format!("sven/{split}"))] } else { v.to_vec() };
    let train_pairs = load(&or_sven(&a.pairs, "train"))?;
    let val_pairs = load(&or_sven(&a.val, "val"))?;
    let n = model.cfg().n_layers;
    let mut cfg = TrainConfig::reference(&model, 4);
    cfg.window = a.window;
    cfg.aggregator = a.aggregator;
    cfg.agg_layers = a.agg_layers;
    cfg.lora = if a.analyzer_only {
        None
    } else {
        let mut l = cfg.lora.take().expect("reference has adapters");
        l.layers = lora_layers(&a.lora_layers, n)?;
        l.rank = a.rank;
        l.alpha = a.lora_alpha;
        l.dropout = a.lora_dropout;
        l.seed = a.init_seed;
        if !a.targets.is_empty() {
            l.targets = a.targets.iter().map(|t| Proj::parse(t)).collect::<Result<_>>()?;
        }
        Some(l)
    };
    cfg.lr = a.lr;
    cfg.head_lr = a.head_lr;
    cfg.adamw.weight_decay = a.weight_decay;
    cfg.batch = a.batch;
    cfg.accum = a.accum;
    cfg.warmup = a.warmup;
    cfg.clip = a.clip;
    cfg.epochs = a.epochs;
    cfg.patience = a.patience;
    cfg.w_sec = a.w_sec;
    cfg.w_kl = a.w_kl;
    cfg.margin = a.margin;
    cfg.seed = a.init_seed;
    cfg.prior = a.prior.rule();
    eprintln!(
        "training on {} pairs, validating on {}; adapters: {}; aggregator {} over {} layers",
        train_pairs.len(),
        val_pairs.len(),
        match &cfg.lora {
            Some(l) => format!("r={} on {:?} of blocks {:?}", l.rank, l.targets.iter().map(|p| p.hf_name()).collect::<Vec<_>>(), l.layers),
            None => "none (analyzer only)".into(),
        },
        a.aggregator.name(),
        a.agg_layers
    );
    let run = RunOptions {
        out: a.out.clone(),
        resume: a.resume,
        cache: (!a.no_cache).then(|| a.cache.clone()),
        progress: true,
        checkpoint_every: a.checkpoint_every,
        val_at_start: !a.no_val_at_start,
        max_steps: a.max_steps,
        features_only: a.features_only,
    };
    let r = train::train(&mut model, &train_pairs, &val_pairs, &cfg, &run)?;
    if a.features_only {
        eprintln!("features of {} + {} pairs ready in {:.0}s", r.train_pairs, r.val_pairs, r.features_secs);
        return Ok(());
    }
    eprintln!(
        "done: {} steps in {:.0}s of training ({} steps per epoch; features {:.0}s); best epoch {:?}; artefacts in {}",
        r.state.step,
        r.state.train_secs,
        r.steps_per_epoch,
        r.features_secs,
        r.state.best_epoch,
        a.out.display()
    );
    if let Some(v) = &r.last_val {
        eprintln!("{}", train::val_line("final", v));
    }
    if !a.no_diagnostics {
        diagnostics(&a, &val_pairs, cfg.max_len)?;
    }
    Ok(())
}

/// The saved guard (best epoch) on whole val functions and on the benchmark's prompts; printed,
/// and added to train_report.json as `diagnostics`.
fn diagnostics(a: &Args, val: &[data::Pair], max_tokens: usize) -> Result<()> {
    use deepguard_methods::diagnostics::{score_pairs, score_prompts, AnalyzerAccuracy};
    let mut model = crate::load_model(&a.model.model)?;
    let guard = deepguard_methods::guard::Guard::load(&a.out, &model)?;
    guard.attach(&mut model)?;
    let pb = deepguard_methods::progress::Progress::new(val.len() as u64, "diagnostics", "pairs");
    let acc = AnalyzerAccuracy::of(&score_pairs(&guard, &model, val, max_tokens, || pb.inc(1))?);
    pb.finish();
    eprintln!("diagnostics: the analyzer on whole val functions (first {max_tokens} tokens):\n{}", acc.markdown());
    // The prompts' spread needs a benchmark; without one (none at the default place) the
    // training still ends well, with that diagnostic left out and said so.
    let prompts = match a.bench.load() {
        Ok((_, scenarios, _)) => {
            let p = score_prompts(&guard, &model, &deepguard_eval::diagnose::prompts(&model, &scenarios)?)?;
            eprintln!("diagnostics: {}", p.line());
            Some(p)
        }
        Err(e) => {
            eprintln!("diagnostics: s̄_prompt's spread not measured (give --data BENCH): {e:#}");
            None
        }
    };
    let path = a.out.join("train_report.json");
    let mut report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?).with_context(|| format!("{}: not JSON", path.display()))?;
    report["diagnostics"] = serde_json::json!({"analyzer_whole_functions": acc, "max_tokens": max_tokens, "prompt_scores": prompts});
    deepguard_runtime::files::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::lora_layers;

    #[test]
    fn lora_layers_reads_all_top_k_and_lists() {
        assert_eq!(lora_layers("all", 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(lora_layers("top2", 24).unwrap(), vec![22, 23]);
        assert_eq!(lora_layers("top30", 24).unwrap(), (0..24).collect::<Vec<_>>(), "more than the model has: all of them");
        assert_eq!(lora_layers("20, 3", 24).unwrap(), vec![20, 3]);
        for (bad, says) in [("top0", "at least one block"), ("topx", "expected topK"), ("24", "block 24 does not exist"), ("1,x", "expected topK, all or a list"), ("", "expected topK")] {
            let e = lora_layers(bad, 24).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
