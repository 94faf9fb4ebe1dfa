use anyhow::{bail, Context, Result};
use crate::args::{BenchArgs, JsonArgs, ModelArgs, SamplingArgs};
use crate::guided::GuidanceArgs;
use deepguard_methods::guided::Guided;
use deepguard_eval::scenario::Scenario;
use deepguard_runtime::chat::{self, Message};
use deepguard_runtime::generate::{generate, Guidance, Method, Prompt, SamplingParams};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (a code prefix in completion mode, a message in chat mode).
    #[arg(long, short, conflicts_with_all = ["prompt_file", "scenarios"])]
    pub prompt: Option<String>,
    /// Read the prompt from a file ("-" for stdin).
    #[arg(long, conflicts_with = "scenarios")]
    pub prompt_file: Option<PathBuf>,
    /// With -s/--scenario: continue one benchmark scenario's prompt (file_context +
    /// func_context); each sample ends with the function, as in `eval`.
    #[command(flatten)]
    pub bench: BenchArgs,
    /// Chat mode: wrap the prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for chat mode.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop string (repeatable); the sample ends before it.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print one JSON object (samples, token counts, timings) instead of streaming text.
    #[command(flatten)]
    pub json: JsonArgs,
    #[command(flatten)]
    pub guided: GuidanceArgs,
    /// With a method: also generate with the plain model (same prompt and settings) first, and
    /// report both texts and the decode-speed ratio.
    #[arg(long)]
    pub compare: bool,
}

/// The one scenario `-s` selects, if given.
fn scenario(a: &Args) -> Result<Option<Scenario>> {
    if a.bench.scenarios.is_empty() {
        return Ok(None);
    }
    let (_, mut found, _) = a.bench.load()?;
    match found.len() {
        1 => Ok(found.pop()),
        0 => bail!("no scenario matches {:?}", a.bench.scenarios),
        k => bail!("{k} scenarios match {:?} ({}, ...): name one", a.bench.scenarios, found.iter().take(3).map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")),
    }
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
    bail!("give a prompt: --prompt TEXT, --prompt-file FILE or -s/--scenario ID")
}

/// The method the options describe (generate applies guards, steering and prompt variants; a
/// rerank needs the evaluation's judge).
fn method(a: &Args) -> Result<Guided> {
    let spec = a.guided.spec()?;
    if spec.rerank.is_some() {
        bail!("method `{spec}`: a rerank needs the evaluation's judge; use it with `deepguard eval` or `compare`");
    }
    Ok(Guided::new(spec, true))
}

/// The prompt's tokens: code as it is, chat rendered with the model's template.
fn tokens(model: &deepguard_runtime::Model, prompt: &Prompt) -> Result<Vec<u32>> {
    let tok = &model.tokenizer;
    let text = match prompt {
        Prompt::Code { text, .. } => text.clone(),
        Prompt::Chat(msgs) => {
            let tokname = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
            chat::render(tok.chat_template.as_deref(), msgs, &tokname(tok.bos_id), &tokname(tok.eos_id))?
        }
    };
    tok.encode(&text)
}

/// A scenario's completion, cut at the end of the function as `eval` cuts it.
fn run_scenario(a: &Args, sc: &Scenario) -> Result<()> {
    let mut model = crate::load_model(&a.model.model)?;
    let method = method(a)?;
    method.prepare(&mut model)?;
    let params = a.sampling.params(1, 0.0, a.stop.clone());
    let t = std::time::Instant::now();
    let recs = deepguard_eval::gen::generate_scenario(&model, &method, sc, &params, true)?;
    if a.json.json || a.json.json_out.is_some() {
        let v = serde_json::json!({"scenario": sc.id, "cwe": sc.cwe, "params": params, "samples": recs});
        a.json.write(&v)?;
        if a.json.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
    }
    for r in &recs {
        if recs.len() > 1 {
            println!("===== sample {} ({} tokens) =====", r.idx + 1, r.tokens);
        }
        println!("{}", r.program(sc));
    }
    eprintln!("{} ({}): {} samples in {:.1}s; `deepguard eval -s {}` tests and judges them", sc.id, sc.cwe, recs.len(), t.elapsed().as_secs_f64(), sc.id);
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if let Some(sc) = scenario(&a)? {
        return run_scenario(&a, &sc);
    }
    let text = prompt_text(&a)?;
    let method = method(&a)?;
    if a.compare && method.spec.is_base() {
        bail!("--compare needs a method (--method, --steer or --guard): it compares it with the plain model");
    }
    let mut model = crate::load_model(&a.model.model)?;
    let prompt = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &text));
        Prompt::Chat(msgs)
    } else {
        Prompt::Code { comment: deepguard_methods::guided::guess_comment(&text).into(), text: text.clone() }
    };
    let params = a.sampling.params(1, 0.0, a.stop.clone());
    // The plain model's generation comes first when comparing: the guard's adapters change
    // the model itself.
    let plain = if a.compare { Some(generate(&model, &tokens(&model, &prompt)?, &params, &mut Guidance::default(), &mut |_, _| {})?) } else { None };
    method.prepare(&mut model)?;
    let prompt = method.prompt(&model, prompt)?;
    let ids = tokens(&model, &prompt)?;
    let mut guidance = method.guidance(&model, &ids)?;
    if let Some(base) = plain {
        return compare(&model, &ids, &params, base, &mut guidance, a.json.json);
    }
    let text = match &prompt {
        Prompt::Code { text, .. } => text.clone(),
        Prompt::Chat(_) => text,
    };
    let stream = !a.json.json;
    let mut out = std::io::stdout().lock();
    if stream && !a.chat {
        write!(out, "{text}")?;
    }
    let single = params.n == 1;
    let g = generate(&model, &ids, &params, &mut guidance, &mut |s, delta| {
        if stream && single && s == 0 {
            let _ = write!(out, "{delta}");
            let _ = out.flush();
        }
    })?;
    if a.json.json || a.json.json_out.is_some() {
        let v = serde_json::json!({
            "model": model.info.path, "fingerprint": model.info.fingerprint, "chat": a.chat,
            "params": params, "prompt_tokens": g.prompt_tokens, "generated_tokens": g.generated_tokens,
            "prefill_secs": g.prefill_secs, "decode_secs": g.decode_secs,
            "decode_tokens_per_sec": g.generated_tokens as f64 / g.decode_secs.max(1e-9),
            "samples": g.samples,
        });
        a.json.write(&v)?;
        if a.json.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
    }
    if !a.json.json {
        if single {
            writeln!(out)?;
        }
        for (i, s) in g.samples.iter().enumerate().filter(|_| !single) {
            writeln!(out, "\n===== sample {} ({} tokens, {:?}) =====", i + 1, s.tokens.len(), s.finish_reason)?;
            if !a.chat {
                write!(out, "{text}")?;
            }
            writeln!(out, "{}", s.text)?;
        }
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
