//! `deepguard serve`: the OpenAI-compatible server (`deepguard_serve`) on one model.

use crate::args::{ModelArgs, VenvArgs};
use crate::guided::GuidanceArgs;
use anyhow::{bail, Result};
use deepguard_eval::judge::{tools::semgrep_rules, Judge};
use deepguard_eval::repair::Checks;
use deepguard_serve::edge::EdgeConfig;
use deepguard_serve::http::HttpConfig;
use deepguard_serve::methods::Methods;
use deepguard_serve::ServeConfig;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The default method of every request (a request may change it in its `deepguard` field).
    #[command(flatten)]
    pub guided: GuidanceArgs,
    /// The static tools of the repair loop (`repair:R`, default or per request) come from it;
    /// without one, a repair is refused (at start-up for the default method, else with a 400).
    #[command(flatten)]
    pub venv: VenvArgs,
    /// Address to listen on. The default serves this machine only; 0.0.0.0 opens the server to
    /// the network (set --api-key then).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the one chosen is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* and /metrics (wrong or missing: 401).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Sequences decoded together at most (a request with n samples takes n); later requests
    /// wait for a free slot.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Context per request: prompt + max_tokens at most (clamped to the model's); longer
    /// requests get a 400 with the numbers.
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
    /// Prompt tokens read per decoding step at most (a joining request's prompt is read in
    /// chunks, so the running ones keep going).
    #[arg(long, default_value_t = 128)]
    pub prefill_chunk: usize,
    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// On SIGTERM or Ctrl-C: seconds running requests may take to finish before they are
    /// cancelled.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_grace: f64,
    /// Seconds a request may take from its head's arrival: its body must arrive within it (else
    /// 408) and its answer be complete (else 504; a stream ends with an error event).
    #[arg(long, default_value_t = 600.0)]
    pub request_timeout: f64,
    /// Seconds a client has to send a request's head (request line and headers) once its first
    /// byte arrived; slower: the connection is closed.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a connection may stay open without sending a request (fresh, or kept alive after a
    /// response); then it is closed.
    #[arg(long, default_value_t = 30.0)]
    pub idle_timeout: f64,
    /// Connections open at once at most; one more is answered 503 and closed.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
}

/// The repair loop's checks, as `eval` runs them (the static tools, semgrep with deepguard's
/// rules, and the build check), or why the venv cannot give them.
fn repair_checks(venv: &VenvArgs) -> std::result::Result<Checks, String> {
    let bin = venv.bin().map_err(|e| format!("{e:#}"))?;
    for tool in ["bandit", "semgrep", "pyflakes"] {
        if !bin.join(tool).exists() {
            return Err(format!("{}: no {tool} in the venv (run scripts/setup.sh)", bin.display()));
        }
    }
    let rules = semgrep_rules().map_err(|e| format!("{e:#}"))?;
    Ok(Checks { judge: deepguard_eval::rerank::scorer(Judge::default_for(&bin, &rules, None)), venv_bin: bin })
}

/// A flag's seconds as a duration: positive and at most a day.
fn seconds(flag: &str, v: f64) -> Result<Duration> {
    if !(v > 0.0 && v <= 86_400.0) {
        bail!("--{flag} must be a number of seconds above 0 and at most 86400, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn run(a: Args) -> Result<()> {
    if a.max_batch == 0 || a.ctx == 0 || a.prefill_chunk == 0 {
        bail!("--max-batch, --ctx and --prefill-chunk must be at least 1");
    }
    if !(a.shutdown_grace >= 0.0 && a.shutdown_grace.is_finite()) {
        bail!("--shutdown-grace must be a number of seconds >= 0");
    }
    if a.api_key.as_deref().is_some_and(str::is_empty) {
        bail!("--api-key must not be empty");
    }
    if a.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let request_timeout = seconds("request-timeout", a.request_timeout)?;
    let edge = EdgeConfig { header_timeout: seconds("header-timeout", a.header_timeout)?, idle_timeout: seconds("idle-timeout", a.idle_timeout)?, max_connections: a.max_connections };
    let spec = a.guided.spec()?;
    let checks = repair_checks(&a.venv);
    if let (Some(_), Err(why)) = (&spec.repair, &checks) {
        bail!("method `{spec}`: the repair loop needs the static tools: {why}");
    }
    let mut model = crate::load_model(&a.model.model)?;
    let methods = Methods::load(&mut model, spec)?.with_checks(checks)?;
    let tools = match methods.checks() {
        Some(c) => format!("repairs checked by {}+build", c.judge.name()),
        None => "no repair tools".into(),
    };
    let model_id = match deepguard_runtime::models::KNOWN_MODELS.iter().find(|k| k.name == a.model.model) {
        Some(k) => k.name.to_string(),
        None => std::path::Path::new(&a.model.model).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| a.model.model.clone()),
    };
    let default = methods.name(&methods.defaults());
    let cfg = ServeConfig {
        host: a.host.clone(),
        port: a.port,
        http: HttpConfig { model_id: model_id.clone(), api_key: a.api_key.clone(), ctx: a.ctx, max_batch: a.max_batch, body_limit: a.max_body_bytes, request_timeout },
        edge,
        prefill_chunk: a.prefill_chunk,
        shutdown_grace: Duration::from_secs_f64(a.shutdown_grace),
    };
    let auth = if a.api_key.is_some() { "bearer key required" } else { "no key" };
    deepguard_serve::serve(model, methods, cfg, |addr| {
        eprintln!("serving {model_id} (default method: {default}; batch {}, {auth}, {tools})", a.max_batch);
        eprintln!("listening on http://{addr}");
    })
}
