use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::args::ModelArgs,
    /// The model as a positional argument (deprecated: use -m/--model).
    #[arg(value_name = "MODEL", hide = true, conflicts_with = "model")]
    pub positional: Option<String>,
    #[arg(long, help = crate::args::JSON_HELP)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let model = match &a.positional {
        Some(m) => {
            eprintln!("warning: `deepguard inspect MODEL` is deprecated: use `deepguard inspect -m MODEL` (the old form goes away in the next release)");
            m.clone()
        }
        None => a.model.model.clone(),
    };
    let m = crate::load_model(&model)?;
    let c = m.cfg();
    let t = &m.tokenizer;
    let name = |id: Option<u32>| id.and_then(|i| t.id_to_token(i));
    let mut stops: Vec<_> = t.stop_ids.iter().map(|&i| (i, t.id_to_token(i).unwrap_or_default())).collect();
    stops.sort();
    if a.json {
        let v = serde_json::json!({
            "info": m.info, "config": c,
            "tokenizer": {"vocab_size": t.vocab_size, "bos": name(t.bos_id), "eos": name(t.eos_id), "add_bos": t.add_bos,
                          "stop_tokens": stops, "chat_template": t.chat_template},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model         {}", m.info.name.as_deref().unwrap_or("-"));
    println!("path          {} ({}, {:.1} MiB)", m.info.path.display(), m.info.format, m.info.file_size as f64 / 1048576.0);
    println!("fingerprint   {}", m.info.fingerprint);
    println!("architecture  {}", c.arch.name());
    println!("layers        {}", c.n_layers);
    println!("hidden        {}  (mlp {})", c.hidden_size, c.intermediate_size);
    println!("heads         {} query, {} key/value (GQA x{}), head_dim {}", c.n_heads, c.n_kv_heads, c.n_heads / c.n_kv_heads, c.head_dim);
    println!("rope          theta {}, {:?}", c.rope_theta, c.rope_style);
    println!("context       {}", c.context_length);
    println!("norm eps      {}", c.rms_norm_eps);
    println!("qkv bias      {}", c.qkv_bias);
    println!("output head   {}", if c.tie_embeddings { "tied to embeddings" } else { "separate" });
    let q: Vec<_> = m.info.dtypes.iter().map(|(d, n)| format!("{d} x{n}")).collect();
    println!("weight types  {}", q.join(", "));
    println!("vocab         {} (bos {:?}, eos {:?}, add_bos {})", t.vocab_size, name(t.bos_id), name(t.eos_id), t.add_bos);
    println!("stop tokens   {}", stops.iter().map(|(i, s)| format!("{s}={i}")).collect::<Vec<_>>().join(", "));
    match &t.chat_template {
        Some(tpl) => println!("chat template ({} chars):\n{tpl}", tpl.len()),
        None => println!("chat template none (ChatML is used)"),
    }
    Ok(())
}
