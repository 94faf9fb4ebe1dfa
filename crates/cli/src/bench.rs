use anyhow::Result;
use deepguard_runtime::generate::{generate, Guidance, SamplingParams};
use deepguard_runtime::models::DEFAULT_MODEL;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Models to measure (repeatable).
    #[arg(long, short, default_values_t = [DEFAULT_MODEL.to_string()])]
    pub model: Vec<String>,
    /// Prompt length for the prefill measurement, in tokens.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens decoded per measurement.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Batch size for the batched measurement.
    #[arg(long, short, default_value_t = 10)]
    pub n: usize,
    /// Write the results as JSON to this file as well.
    #[arg(long)]
    pub json: Option<PathBuf>,
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
    peak_rss_mib: f64,
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
        let mut no_eos = Guidance::default();
        no_eos.processors.push(Box::new(BanTokens(m.tokenizer.stop_ids.iter().copied().collect())));
        let g1 = generate(&m, short, &single, &mut no_eos, &mut |_, _| {})?;
        let decode = g1.generated_tokens as f64 / g1.decode_secs;
        let batched = SamplingParams { n: a.n, ..single.clone() };
        let gb = generate(&m, short, &batched, &mut no_eos, &mut |_, _| {})?;
        let agg = gb.generated_tokens as f64 / gb.decode_secs;
        rows.push(Row {
            model: spec.clone(),
            threads,
            prompt_tokens: prompt.len(),
            prefill_tok_s: prefill,
            decode_tok_s: decode,
            batch: a.n,
            batched_aggregate_tok_s: agg,
            batched_per_stream_tok_s: agg / a.n as f64,
            peak_rss_mib: peak_rss_mib(),
        });
    }
    println!("| model | threads | prefill tok/s ({} tok) | decode tok/s | batch n | batched aggregate tok/s | per stream | peak RSS MiB |", a.prompt_tokens);
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.0} |",
            r.model, r.threads, r.prefill_tok_s, r.decode_tok_s, r.batch, r.batched_aggregate_tok_s, r.batched_per_stream_tok_s, r.peak_rss_mib
        );
    }
    let js = serde_json::to_string_pretty(&rows)?;
    println!("{js}");
    if let Some(p) = a.json {
        std::fs::write(&p, &js)?;
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
