use anyhow::Result;
use deepguard_runtime::generate::{generate, Guidance, SamplingParams};
use deepguard_runtime::hooks::{AddBias, AddVector};
use deepguard_runtime::models::DEFAULT_MODEL;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, default_values_t = [DEFAULT_MODEL.to_string()], help = crate::args::MODEL_HELP)]
    pub model: Vec<String>,
    /// Prompt length for the prefill measurement, in tokens.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens decoded per measurement.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    #[arg(long, short, default_value_t = 10, help = crate::args::N_HELP)]
    pub n: usize,
    /// Single-stream vs batched decode: this many back-to-back pairs (ABBA order); each run
    /// counts as tokens per step / its median step time, and the speed-up is the median over the
    /// pairs of batched / single.
    #[arg(long, default_value_t = 3)]
    pub batched_pairs: usize,
    /// Plain vs guided decode (a steering hook at the middle block and a dense logits bias):
    /// this many back-to-back pairs, in ABBA order; each run counts as 1 / its median step time,
    /// and the overhead is the median over the pairs of guided / plain.
    #[arg(long, default_value_t = 25)]
    pub guided_repeats: usize,
    /// Tokens decoded per run of the plain vs guided comparison: short runs keep the two runs of
    /// a pair close in time, so that the host's load swings hit both.
    #[arg(long, default_value_t = 32)]
    pub guided_tokens: usize,
    #[command(flatten)]
    pub json: crate::args::JsonArgs,
}

#[derive(Serialize)]
struct Row {
    model: String,
    threads: usize,
    prompt_tokens: usize,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    batch: usize,
    batched_aggregate_tok_s: f64,
    batched_per_stream_tok_s: f64,
    /// The median over back-to-back (single, batched) pairs of batched / single tokens/s, each run
    /// counted by its median step time.
    batched_over_single: f64,
    /// The two runs of each pair (tokens per step / median step time).
    single_runs_tok_s: Vec<f64>,
    batched_runs_tok_s: Vec<f64>,
    /// Single-stream decode without and with guidance: per run, 1 / its median step time; here
    /// the median over the runs.
    decode_plain_median_tok_s: f64,
    decode_guided_median_tok_s: f64,
    /// The median over the back-to-back pairs of (guided / plain): 0.97 means guidance costs 3%.
    /// Pairs, because the two runs of a pair see nearly the same machine.
    guided_over_plain: f64,
    /// The ratio of the two medians above (more exposed to drifts of the machine).
    guided_over_plain_of_medians: f64,
    /// Every run (1 / median step time), in the order of the pairs (ABBA: plain first in even
    /// pairs, guided first in odd).
    decode_plain_runs_tok_s: Vec<f64>,
    decode_guided_runs_tok_s: Vec<f64>,
    peak_rss_mib: f64,
}

/// Runs `run(false)` and `run(true)` back to back for each pair index, in ABBA order (the one
/// that runs second alternates, so a drift of the machine hits both), and returns their results
/// as (all false, all true).
fn abba_pairs(pairs: std::ops::Range<usize>, mut run: impl FnMut(bool) -> Result<f64>) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in pairs {
        for second in if i % 2 == 0 { [false, true] } else { [true, false] } {
            let r = run(second)?;
            if second { b.push(r) } else { a.push(r) }
        }
    }
    Ok((a, b))
}

/// Tokens per step / the run's median step time: a burst of load on the host that covers less
/// than half of the run does not move it.
fn step_rate(g: &deepguard_runtime::generate::Generation, tokens_per_step: usize) -> f64 {
    tokens_per_step as f64 / median(g.step_secs.clone())
}

/// The median over pairs of b / a.
fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(a, b)| b / a).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A code prompt long enough to be cut to any length.
fn bench_prompt(tok: &deepguard_runtime::tokenizer::Tokenizer, n: usize) -> Result<Vec<u32>> {
    let base = "def process_request(request, db):\n    user = request.args.get('user')\n    cursor = db.cursor()\n    cursor.execute('SELECT * FROM users WHERE name = ?', (user,))\n    rows = cursor.fetchall()\n    return [dict(r) for r in rows]\n\n";
    let mut ids = Vec::new();
    while ids.len() < n {
        ids.extend(tok.encode(base)?);
    }
    ids.truncate(n);
    Ok(ids)
}

pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(a: Args) -> Result<()> {
    if a.guided_repeats == 0 {
        anyhow::bail!("--guided-repeats must be at least 1");
    }
    if a.batched_pairs == 0 {
        anyhow::bail!("--batched-pairs must be at least 1");
    }
    if a.guided_tokens == 0 {
        anyhow::bail!("--guided-tokens must be at least 1");
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut rows = Vec::new();
    for spec in &a.model {
        let m = crate::load_model(spec)?;
        let prompt = bench_prompt(&m.tokenizer, a.prompt_tokens)?;
        let p1 = SamplingParams { max_tokens: 1, ..Default::default() };
        // warm-up
        generate(&m, &prompt[..16.min(prompt.len())], &SamplingParams { max_tokens: 4, ..Default::default() }, &mut Guidance::default(), &mut |_, _| {})?;
        let g = generate(&m, &prompt, &p1, &mut Guidance::default(), &mut |_, _| {})?;
        let prefill = prompt.len() as f64 / g.prefill_secs;
        let short = &prompt[..32.min(prompt.len())];
        let single = SamplingParams { max_tokens: a.gen_tokens, temperature: 0.8, top_p: 0.95, ..Default::default() };
        let ban_eos = || Box::new(BanTokens(m.tokenizer.stop_ids.iter().copied().collect()));
        let mut no_eos = Guidance::default();
        no_eos.processors.push(ban_eos());
        let g1 = generate(&m, short, &single, &mut no_eos, &mut |_, _| {})?;
        let decode = g1.generated_tokens as f64 / g1.decode_secs;
        let batched = SamplingParams { n: a.n, ..single.clone() };
        let gb = generate(&m, short, &batched, &mut no_eos, &mut |_, _| {})?;
        let agg = gb.generated_tokens as f64 / gb.decode_secs;
        // Batched over single stream from pairs of runs close in time: the two runs above, then
        // more pairs. Every sample runs to the end (no EOS), so a batched step yields n tokens.
        let (mut single_runs, mut batched_runs) = abba_pairs(1..a.batched_pairs, |is_batched| {
            let mut gd = Guidance::default();
            gd.processors.push(ban_eos());
            let g = generate(&m, short, if is_batched { &batched } else { &single }, &mut gd, &mut |_, _| {})?;
            Ok(step_rate(&g, if is_batched { a.n } else { 1 }))
        })?;
        single_runs.insert(0, step_rate(&g1, 1));
        batched_runs.insert(0, step_rate(&gb, a.n));
        let batched_over_single = median_ratio(&single_runs, &batched_runs);
        // Guidance overhead: a steering vector added after the middle block from the last prompt
        // token on, and a dense bias over the vocabulary at every step, as `--steer` and
        // `--guard` apply them (small magnitudes: the text stays ordinary code). Plain and guided
        // runs alternate so that drifts of the machine hit both.
        let (hidden, vocab) = (m.cfg().hidden_size, m.cfg().vocab_size);
        let v = deepguard_runtime::rng::normal(7, 0.01, &[hidden], m.decoder.device())?;
        let bias: Vec<f32> = (0..vocab).map(|i| ((i * 2654435761) % 1000) as f32 * 1e-4).collect();
        let pair_params = SamplingParams { max_tokens: a.guided_tokens, ..single.clone() };
        let (plain, guided) = abba_pairs(0..a.guided_repeats, |with_guidance| {
            let mut gd = Guidance::default();
            gd.processors.push(ban_eos());
            if with_guidance {
                gd.hooks.push(Box::new(AddVector::new(m.cfg().n_layers / 2, &v, 1.0, short.len() - 1)?));
                gd.processors.push(Box::new(AddBias { bias: bias.clone() }));
            }
            Ok(step_rate(&generate(&m, short, &pair_params, &mut gd, &mut |_, _| {})?, 1))
        })?;
        let (pm, gm) = (median(plain.clone()), median(guided.clone()));
        let paired = median_ratio(&plain, &guided);
        rows.push(Row {
            model: spec.clone(),
            threads,
            prompt_tokens: prompt.len(),
            prefill_tok_s: prefill,
            decode_tok_s: decode,
            batch: a.n,
            batched_aggregate_tok_s: agg,
            batched_per_stream_tok_s: agg / a.n as f64,
            batched_over_single,
            single_runs_tok_s: single_runs,
            batched_runs_tok_s: batched_runs,
            decode_plain_median_tok_s: pm,
            decode_guided_median_tok_s: gm,
            guided_over_plain: paired,
            guided_over_plain_of_medians: gm / pm,
            decode_plain_runs_tok_s: plain,
            decode_guided_runs_tok_s: guided,
            peak_rss_mib: peak_rss_mib(),
        });
    }
    let v = serde_json::to_value(&rows)?;
    a.json.write(&v)?;
    if a.json.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "| model | threads | prefill tok/s ({} tok) | decode tok/s | batch n | batched aggregate tok/s | batched / single (median of {} pairs) | decode plain / guided tok/s (medians of {}) | guided / plain (median of pairs) | peak RSS MiB |",
        a.prompt_tokens, a.batched_pairs, a.guided_repeats
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.2}x | {:.1} / {:.1} | {:.3} | {:.0} |",
            r.model,
            r.threads,
            r.prefill_tok_s,
            r.decode_tok_s,
            r.batch,
            r.batched_aggregate_tok_s,
            r.batched_over_single,
            r.decode_plain_median_tok_s,
            r.decode_guided_median_tok_s,
            r.guided_over_plain,
            r.peak_rss_mib
        );
    }
    Ok(())
}

/// Keeps benchmark runs at their full length by banning end-of-sequence tokens.
struct BanTokens(Vec<u32>);

impl deepguard_runtime::hooks::LogitsProcessor for BanTokens {
    fn process(&mut self, _s: usize, _step: usize, logits: &mut [f32]) -> Result<()> {
        for &t in &self.0 {
            logits[t as usize] = f32::NEG_INFINITY;
        }
        Ok(())
    }
}
