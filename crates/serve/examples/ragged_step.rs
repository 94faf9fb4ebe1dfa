//! Cost of a decode step as the server runs it (one ragged pass over B requests, each its own
//! segment and cache) against the same B rows as one request's batch (`generate -n B`), in
//! alternating rounds on one model. Run: `cargo run --release -p deepguard-serve --example
//! ragged_step -- [MODEL] [B] [STEPS]`.

use candle_core::{Device, Tensor};
use deepguard_runtime::decoder::{ForwardOpts, Segment};
use deepguard_runtime::kv_cache::KvCache;
use deepguard_runtime::Model;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let spec = args.get(1).map(String::as_str).unwrap_or("qwen2.5-coder-0.5b");
    let b: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let steps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let m = Model::load(&deepguard_runtime::models::resolve(spec)?, &Device::Cpu)?;
    let prompt = m.tokenizer.encode("import sqlite3\n\ndef get_user(db_path, username):\n    \"\"\"Return the row of `username` from the users table.\"\"\"\n")?;
    let p = prompt.len();
    let opts = ForwardOpts::inference();
    let layers = m.cfg().n_layers;
    let fill = |rows: usize| -> anyhow::Result<KvCache> {
        let mut c = KvCache::new(layers, p + steps + 1);
        m.decoder.forward(&Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?, 0, Some(&mut c), &opts)?;
        if rows > 1 {
            c.expand_batch(rows)?;
        }
        Ok(c)
    };
    let tok = 220u32;
    let (mut batch_s, mut ragged_s) = (Vec::new(), Vec::new());
    for round in 0..3 {
        // one request of B rows
        let mut c = fill(b)?;
        let t = Instant::now();
        for s in 0..steps {
            m.decoder.forward(&Tensor::new(vec![tok; b], &Device::Cpu)?.unsqueeze(1)?, p + s, Some(&mut c), &opts)?;
        }
        batch_s.push(t.elapsed().as_secs_f64() / steps as f64);
        // B requests of one row
        let mut cs: Vec<KvCache> = (0..b).map(|_| fill(1)).collect::<anyhow::Result<_>>()?;
        let t = Instant::now();
        for _ in 0..steps {
            let mut segs: Vec<Segment> = cs.iter_mut().map(|c| Segment { cache: c, rows: 1, t: 1, hooks: &[], lora: false, logits: true }).collect();
            m.decoder.forward_ragged(&vec![tok; b], &mut segs)?;
        }
        ragged_s.push(t.elapsed().as_secs_f64() / steps as f64);
        println!("round {round}: batch of {b} rows {:.1} ms/step, {b} segments {:.1} ms/step", batch_s[round] * 1e3, ragged_s[round] * 1e3);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (bm, rm) = (med(&mut batch_s), med(&mut ragged_s));
    println!("median: batch {:.1} ms, ragged {:.1} ms per step: ragged/batch {:.3}", bm * 1e3, rm * 1e3, rm / bm);
    Ok(())
}
