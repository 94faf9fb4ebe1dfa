use anyhow::{bail, Context, Result};
use crate::guided::GuidanceArgs;
use deepguard_eval::method::Method;
use deepguard_runtime::chat::{self, Message};
use deepguard_runtime::generate::{generate, Guidance, SamplingParams};
use deepguard_runtime::models::DEFAULT_MODEL;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a short name (qwen2.5-coder-0.5b, smollm2-135m), a .gguf file or an HF folder.
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// The prompt text (a code prefix in completion mode, a message in chat mode).
    #[arg(long, short, conflicts_with_all = ["prompt_file", "scenario"])]
    pub prompt: Option<String>,
    /// Read the prompt from a file ("-" for stdin).
    #[arg(long, conflicts_with = "scenario")]
    pub prompt_file: Option<PathBuf>,
    /// A benchmark scenario folder (file_context + func_context), e.g.
    /// ../shared/data/eval/sec_eval/base/cwe-089/0-py
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Chat mode: wrap the prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for chat mode.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Number of samples, decoded together as a batch.
    #[arg(long, short, default_value_t = 1)]
    pub n: usize,
    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, short, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop string (repeatable); the sample ends before it.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print one JSON object (samples, token counts, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub guided: GuidanceArgs,
    /// With --steer and/or --guard: also generate with the plain model (same prompt and
    /// settings) first, and report both texts and the decode-speed ratio.
    #[arg(long)]
    pub compare: bool,
}

pub fn prompt_text(a: &Args) -> Result<String> {
    if let Some(p) = &a.prompt {
        return Ok(p.clone());
    }
    if let Some(f) = &a.prompt_file {
        if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            return Ok(s);
        }
        return std::fs::read_to_string(f).with_context(|| format!("cannot read prompt file {}", f.display()));
    }
    if let Some(d) = &a.scenario {
        return scenario_prompt(d);
    }
    bail!("give a prompt: --prompt TEXT, --prompt-file FILE or --scenario DIR")
}

/// file_context + func_context of a scenario folder (either extension).
pub fn scenario_prompt(dir: &std::path::Path) -> Result<String> {
    let find = |stem: &str| -> Result<String> {
        for ext in ["py", "c", "cpp", "js", "go", "rb", "java"] {
            let p = dir.join(format!("{stem}.{ext}"));
            if p.exists() {
                return std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()));
            }
        }
        bail!("{}: no {stem}.* file (is this a scenario folder?)", dir.display())
    };
    Ok(find("file_context")? + &find("func_context")?)
}

pub fn run(a: Args) -> Result<()> {
    let text = prompt_text(&a)?;
    if a.compare && a.guided.steer.is_none() && a.guided.guard.is_none() {
        bail!("--compare needs --steer and/or --guard (it compares them with the plain model)");
    }
    let mut model = crate::load_model(&a.model)?;
    let tok = &model.tokenizer;
    let prompt = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &text));
        let tokname = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
        chat::render(tok.chat_template.as_deref(), &msgs, &tokname(tok.bos_id), &tokname(tok.eos_id))?
    } else {
        text.clone()
    };
    let ids = tok.encode(&prompt)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        n: a.n,
    };
    // The plain model's generation comes first when comparing: the guard's adapters change
    // the model itself.
    let plain = if a.compare { Some(generate(&model, &ids, &params, &mut Guidance::default(), &mut |_, _| {})?) } else { None };
    let method = a.guided.method(true)?;
    method.prepare(&mut model)?;
    let mut guidance = method.guidance(&model, &ids)?;
    if let Some(base) = plain {
        return compare(&model, &ids, &params, base, &mut guidance, a.json);
    }
    let stream = !a.json;
    let mut out = std::io::stdout().lock();
    if stream && !a.chat {
        write!(out, "{text}")?;
    }
    let single = a.n == 1;
    let g = generate(&model, &ids, &params, &mut guidance, &mut |s, delta| {
        if stream && single && s == 0 {
            let _ = write!(out, "{delta}");
            let _ = out.flush();
        }
    })?;
    if a.json {
        let v = serde_json::json!({
            "model": model.info.path, "fingerprint": model.info.fingerprint, "chat": a.chat,
            "params": params, "prompt_tokens": g.prompt_tokens, "generated_tokens": g.generated_tokens,
            "prefill_secs": g.prefill_secs, "decode_secs": g.decode_secs,
            "decode_tokens_per_sec": g.generated_tokens as f64 / g.decode_secs.max(1e-9),
            "samples": g.samples,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else if !single {
        for (i, s) in g.samples.iter().enumerate() {
            writeln!(out, "\n===== sample {} ({} tokens, {:?}) =====", i + 1, s.tokens.len(), s.finish_reason)?;
            if !a.chat {
                write!(out, "{text}")?;
            }
            writeln!(out, "{}", s.text)?;
        }
    } else {
        writeln!(out)?;
    }
    eprintln!(
        "{} prompt tokens, {} generated in {:.2}s ({:.1} tok/s decode, prefill {:.2}s)",
        g.prompt_tokens,
        g.generated_tokens,
        g.decode_secs,
        g.generated_tokens as f64 / g.decode_secs.max(1e-9),
        g.prefill_secs
    );
    Ok(())
}

/// The plain model's generation `base` next to the guided one of the same prompt; both texts
/// and decode speeds.
fn compare(model: &deepguard_runtime::Model, ids: &[u32], params: &SamplingParams, base: deepguard_runtime::generate::Generation, steered: &mut Guidance, json: bool) -> Result<()> {
    let st = generate(model, ids, params, steered, &mut |_, _| {})?;
    let rate = |g: &deepguard_runtime::generate::Generation| g.generated_tokens as f64 / g.decode_secs.max(1e-9);
    let ratio = rate(&st) / rate(&base);
    let differ = base.samples.iter().zip(&st.samples).filter(|(x, y)| x.tokens != y.tokens).count();
    if json {
        let v = serde_json::json!({
            "plain": {"samples": base.samples, "decode_tokens_per_sec": rate(&base), "generated_tokens": base.generated_tokens},
            "guided": {"samples": st.samples, "decode_tokens_per_sec": rate(&st), "generated_tokens": st.generated_tokens},
            "guided_over_plain_decode_speed": ratio, "samples_that_differ": differ,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (name, g) in [("plain", &base), ("guided", &st)] {
            for (i, s) in g.samples.iter().enumerate() {
                println!("===== {name} sample {} ({} tokens) =====\n{}", i + 1, s.tokens.len(), s.text);
            }
        }
    }
    eprintln!(
        "decode: plain {:.2} tok/s, guided {:.2} tok/s, ratio guided/plain {:.3}; {differ} of {} samples differ",
        rate(&base),
        rate(&st),
        ratio,
        base.samples.len()
    );
    Ok(())
}
