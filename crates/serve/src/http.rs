//! The HTTP side (axum): routes, authentication, request validation, and the two response
//! shapes of OpenAI's API (one JSON object, or server-sent events ending with `data: [DONE]`).

use crate::api::{self, ApiError, ChatRequest, CompletionRequest, PromptInput};
use crate::engine::{Engine, Event, Job, Prepare};
use crate::methods::Methods;
use crate::repair::{self, Subject};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deepguard_runtime::chat::{self, Message};
use deepguard_methods::guided::Guided;
use deepguard_methods::spec::MethodSpec;
use deepguard_runtime::generate::{FinishReason, Prompt, SamplingParams};
use deepguard_runtime::Model;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The id `/v1/models` lists and responses carry.
    pub model_id: String,
    /// Bearer token required on `/v1/*` and `/metrics`.
    pub api_key: Option<String>,
    /// Prompt + max_tokens at most.
    pub ctx: usize,
    pub max_batch: usize,
    /// Request bodies larger than this are refused (413).
    pub body_limit: usize,
    /// A request's time limit, from its head's arrival: its body must arrive within it (else
    /// 408), and its answer must be complete (else 504, or an error event ending the stream).
    pub request_timeout: std::time::Duration,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub model: Arc<Model>,
    pub methods: Arc<Methods>,
    pub cfg: Arc<HttpConfig>,
    pub created: u64,
}

pub fn router(state: AppState) -> Router {
    let limit = state.cfg.body_limit;
    let protected = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(protected)
        .route("/health", get(health))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Unknown endpoint: this server offers /v1/completions, /v1/chat/completions, /v1/models, /health and /metrics.") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A known endpoint asked with the wrong method: 405 with OpenAI's error object (axum adds the
/// `Allow` header).
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("Method {method} is not allowed on {path} (the Allow header lists the methods that are)."))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>())
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.cfg.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let ok = given.is_some_and(|g| same_secret(g.as_bytes(), key.as_bytes()));
        if !ok {
            st.engine.metrics.requests_failed.fetch_add(1, Relaxed);
            let msg = if given.is_some() { "Incorrect API key provided." } else { "Missing API key: send `Authorization: Bearer KEY`." };
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, msg).code("invalid_api_key").into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

async fn health(State(st): State<AppState>) -> Response {
    if st.engine.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"}))).into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.engine.metrics.render()).into_response()
}

async fn models(State(st): State<AppState>) -> Json<Value> {
    let cfg = st.model.cfg();
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.cfg.model_id, "object": "model", "created": st.created, "owned_by": "deepguard",
            "deepguard": {
                "context": st.cfg.ctx, "max_batch": st.cfg.max_batch, "arch": format!("{:?}", cfg.arch).to_lowercase(),
                "layers": cfg.n_layers, "fingerprint": st.model.info.fingerprint, "methods": st.methods.describe(),
            },
        }],
    }))
}

/// The two endpoints differ in the prompt and the shape of choices only.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE { "Request body too large for this server (--max-body-bytes).".to_string() } else { format!("Could not read the request body: {e}") };
        ApiError::new(status, msg)
    })
}

/// Reads the body within the request's time limit.
async fn read_body(st: &AppState, req: Request, deadline: Instant) -> Result<Bytes, ApiError> {
    match tokio::time::timeout_at(deadline.into(), Bytes::from_request(req, &())).await {
        Ok(body) => body_or_error(body),
        Err(_) => {
            st.engine.metrics.requests_timed_out.fetch_add(1, Relaxed);
            Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("The request body did not arrive within the server's time limit of {}s (--request-timeout).", st.cfg.request_timeout.as_secs_f64())))
        }
    }
}

async fn completions(State(st): State<AppState>, req: Request) -> Response {
    let arrived = Instant::now();
    let deadline = arrived + st.cfg.request_timeout;
    let r = async {
        let body = read_body(&st, req, deadline).await?;
        let req: CompletionRequest = api::parse(&body)?;
        if req.echo == Some(true) {
            return Err(ApiError::bad("'echo' is not supported.").param("echo"));
        }
        if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad("'suffix' (fill-in-the-middle) is not supported.").param("suffix"));
        }
        if req.best_of.is_some_and(|b| b > 1) {
            return Err(ApiError::bad("'best_of' > 1 is not supported; use n.").param("best_of"));
        }
        let tok = &st.model.tokenizer;
        let choice = st.methods.choose(req.deepguard.as_ref())?;
        let asked = match req.deepguard.as_ref().and_then(|o| o.language.as_deref()) {
            Some(l) => Some(deepguard_eval::scenario::Lang::parse(l).ok_or_else(|| ApiError::bad(format!("Invalid value for 'deepguard.language': expected \"python\" or \"c\", got {l:?}.")).param("deepguard.language"))?),
            None => None,
        };
        let input = api::prompt_input(req.prompt.as_ref(), st.model.cfg().vocab_size)?;
        let mut extra = serde_json::Map::new();
        let mut subject = None;
        let ids = if choice.prompt.is_none() && choice.repair.is_none() {
            match input {
                PromptInput::Text(t) => tok.encode(&t).map_err(|e| ApiError::bad(format!("{e:#}")).param("prompt"))?,
                PromptInput::Tokens(ids) => ids,
            }
        } else {
            // A prompt variant and the repair loop work on the prompt's text, in its language.
            let text = match input {
                PromptInput::Text(t) => t,
                PromptInput::Tokens(ids) => tok.decode(&ids).map_err(|e| ApiError::bad(format!("{e:#}")).param("prompt"))?,
            };
            let lang = asked.unwrap_or_else(|| repair::guess_language(&text));
            extra.insert("language".into(), json!(repair::language_name(lang)));
            let text = match rewrite(&st, &choice, Prompt::Code { text, comment: lang.comment().into() }, &mut extra).await? {
                Prompt::Code { text, .. } => text,
                Prompt::Chat(_) => unreachable!("a code prompt stays code"),
            };
            let ids = tok.encode(&text).map_err(|e| ApiError::bad(format!("{e:#}")).param("prompt"))?;
            subject = Some(Subject::Completion { prompt: text, lang });
            ids
        };
        let common = Common::completion(&req);
        run(&st, Kind::Completion, ids, common, Chosen { spec: choice, subject, extra }, arrived, deadline).await
    }
    .await;
    r.unwrap_or_else(|e| failed(&st, e))
}

async fn chat_completions(State(st): State<AppState>, req: Request) -> Response {
    let arrived = Instant::now();
    let deadline = arrived + st.cfg.request_timeout;
    let r = async {
        let body = read_body(&st, req, deadline).await?;
        let req: ChatRequest = api::parse(&body)?;
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::bad("'tools' are not supported.").param("tools"));
        }
        if let Some(f) = &req.response_format {
            if f["type"].as_str().is_some_and(|t| t != "text") {
                return Err(ApiError::bad("Only the 'text' response format is supported.").param("response_format"));
            }
        }
        let Some(msgs) = &req.messages else { return Err(ApiError::bad("Missing required parameter: 'messages'.").param("messages")) };
        if msgs.is_empty() {
            return Err(ApiError::bad("Invalid value for 'messages': at least one message is required.").param("messages"));
        }
        let mut messages = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => return Err(ApiError::bad(format!("Invalid value for 'messages.[{i}].role': {other:?} (expected system, developer, user or assistant).")).param(&format!("messages.[{i}].role"))),
            };
            messages.push(Message::new(role, &api::message_text(m, i)?));
        }
        let choice = st.methods.choose(req.deepguard.as_ref())?;
        let mut extra = serde_json::Map::new();
        if choice.prompt.is_some() {
            messages = match rewrite(&st, &choice, Prompt::Chat(messages), &mut extra).await? {
                Prompt::Chat(m) => m,
                Prompt::Code { .. } => unreachable!("a chat stays a chat"),
            };
            if let (Some(p), Some(m)) = (extra.get_mut("prompt"), messages.first().filter(|m| m.role == "system")) {
                if p.is_object() {
                    p["system"] = json!(m.content);
                }
            }
        }
        // the template's markers are special tokens, the messages' contents plain text
        let ids = chat::encode(&st.model.tokenizer, &messages).map_err(|e| ApiError::bad(format!("{e:#}")).param("messages"))?;
        let mut common = Common::chat(&req);
        common.max_tokens = req.max_completion_tokens.or(req.max_tokens);
        let subject = choice.repair.is_some().then(|| Subject::Chat { messages });
        run(&st, Kind::Chat, ids, common, Chosen { spec: choice, subject, extra }, arrived, deadline).await
    }
    .await;
    r.unwrap_or_else(|e| failed(&st, e))
}

/// The request's prompt rewritten by its method's prompt variant (in a blocking task: `prompt:cwe`
/// routes with a forward pass); what was done goes in `extra["prompt"]`.
async fn rewrite(st: &AppState, spec: &MethodSpec, prompt: Prompt, extra: &mut serde_json::Map<String, Value>) -> Result<Prompt, ApiError> {
    if spec.prompt.is_none() {
        return Ok(prompt);
    }
    let (model, method) = (st.model.clone(), Guided::new(spec.clone(), false));
    let r = tokio::task::spawn_blocking(move || method.rewrite(&model, prompt)).await;
    let (p, what) = r.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the prompt variant stopped: {e}")))?.map_err(|e| ApiError::bad(format!("{e:#}")).param("deepguard.method"))?;
    extra.insert("prompt".into(), what);
    Ok(p)
}

/// A request's method, and what its prompt variant or repair needs.
struct Chosen {
    spec: MethodSpec,
    /// The prompt's text or messages (as the model sees them), for a repair.
    subject: Option<Subject>,
    /// Added to the response's `deepguard` report (`language`, `prompt`).
    extra: serde_json::Map<String, Value>,
}

/// One sample generated to its end, as the repair loop uses it.
pub struct Generated {
    pub text: String,
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// What the method applied.
    pub report: Value,
}

/// Queues one job of one sample and waits for all of it.
pub async fn generate_one(st: &AppState, ids: Vec<u32>, params: SamplingParams, prepare: Prepare, arrived: Instant, deadline: Instant) -> Result<Generated, ApiError> {
    let (tx, mut rx) = unbounded_channel();
    let job = Job { prompt: ids, params: SamplingParams { n: 1, ..params }, prepare, events: tx, arrived, deadline: Some(deadline) };
    if st.engine.submit(job).is_err() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down."));
    }
    let (mut text, mut reason, mut report) = (String::new(), None, Value::Null);
    loop {
        match rx.recv().await {
            Some(Event::Started { report: r }) => report = r,
            Some(Event::Text { delta, .. }) => text.push_str(&delta),
            Some(Event::Finished { reason: r, .. }) => reason = Some(r),
            Some(Event::Failed { status, message }) => return Err(ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), message)),
            Some(Event::Done { prompt_tokens, generated_tokens }) => {
                return Ok(Generated { text, finish_reason: reason.map(finish_reason).unwrap_or("length"), prompt_tokens, completion_tokens: generated_tokens, report });
            }
            None => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The decoding engine stopped.")),
        }
    }
}

fn failed(st: &AppState, e: ApiError) -> Response {
    st.engine.metrics.requests_failed.fetch_add(1, Relaxed);
    e.into_response()
}

/// The fields both endpoints share.
struct Common {
    max_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u64>,
    stop: Option<Value>,
    seed: Option<serde_json::Number>,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
    penalties: [(&'static str, Option<f64>); 2],
    logit_bias: bool,
    logprobs: bool,
}

macro_rules! common_from {
    ($r:expr) => {
        Common {
            max_tokens: $r.max_tokens,
            temperature: $r.temperature,
            top_p: $r.top_p,
            n: $r.n,
            stop: $r.stop.clone(),
            seed: $r.seed.clone(),
            stream: $r.stream.unwrap_or(false),
            include_usage: $r.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
            ignore_eos: $r.ignore_eos.unwrap_or(false),
            penalties: [("presence_penalty", $r.presence_penalty), ("frequency_penalty", $r.frequency_penalty)],
            logit_bias: $r.logit_bias.as_ref().is_some_and(|m| !m.is_empty()),
            logprobs: match &$r.logprobs {
                None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                Some(Value::Number(n)) => n.as_u64() != Some(0),
                Some(_) => true,
            } || $r.top_logprobs.is_some_and(|k| k > 0),
        }
    };
}

impl Common {
    fn completion(r: &CompletionRequest) -> Self {
        common_from!(r)
    }
    fn chat(r: &ChatRequest) -> Self {
        common_from!(r)
    }
}

/// Validates the sampling settings, queues the job, and answers (streamed or not).
async fn run(st: &AppState, kind: Kind, ids: Vec<u32>, c: Common, chosen: Chosen, arrived: Instant, deadline: Instant) -> Result<Response, ApiError> {
    let cfg = &st.cfg;
    for (name, v) in c.penalties {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::bad(format!("'{name}' is not supported (only 0).")).param(name));
        }
    }
    if c.logit_bias {
        return Err(ApiError::bad("'logit_bias' is not supported.").param("logit_bias"));
    }
    if c.logprobs {
        return Err(ApiError::bad("'logprobs' are not supported.").param("logprobs"));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(format!("Invalid 'temperature': {temperature} is not between 0 and 2.")).param("temperature"));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(format!("Invalid 'top_p': {top_p} is not in (0, 1].")).param("top_p"));
    }
    let n = c.n.unwrap_or(1);
    if n == 0 || n > cfg.max_batch as u64 {
        return Err(ApiError::bad(format!("Invalid 'n': {n} is not between 1 and the server's batch of {} (--max-batch).", cfg.max_batch)).param("n"));
    }
    let stop = api::stop_strings(c.stop.as_ref())?;
    let p = ids.len();
    let what = if kind == Kind::Chat { "messages" } else { "prompt" };
    if p == 0 {
        return Err(ApiError::bad(format!("The {what} is empty (no tokens).")).param(what));
    }
    // any u64 the client sends: the sum is taken in u128, so it cannot wrap past the check
    let max_tokens: u64 = match c.max_tokens {
        Some(m) => m,
        // OpenAI's defaults: 16 for completions, the rest of the context for chat.
        None if kind == Kind::Completion => 16.min(cfg.ctx.saturating_sub(p)) as u64,
        None => cfg.ctx.saturating_sub(p) as u64,
    };
    let total = p as u128 + max_tokens as u128;
    if total > cfg.ctx as u128 || (kind == Kind::Chat && c.max_tokens.is_none() && p >= cfg.ctx) {
        return Err(ApiError::bad(format!(
            "This model's maximum context length is {} tokens. However, you requested {total} tokens ({p} in the {what}, {max_tokens} for the completion). Please reduce the length of the {what} or completion.",
            cfg.ctx,
        ))
        .param(what)
        .code("context_length_exceeded"));
    }
    let max_tokens = max_tokens as usize;
    let seed = match &c.seed {
        None => rand::random(),
        Some(s) => s.as_u64().ok_or_else(|| ApiError::bad(format!("Invalid 'seed': {s} is not an integer between 0 and {}.", u64::MAX)).param("seed"))?,
    };
    let Chosen { spec: choice, subject, extra } = chosen;
    let params = SamplingParams { temperature, top_p, seed, max_tokens, stop, n: n as usize };
    if let Some(r) = choice.repair {
        if c.stream {
            return Err(ApiError::bad("A repair (deepguard method `repair:R`) is not streamed: its answer is known only after the checks; send the request with 'stream': false.").param("stream"));
        }
        if n > 1 {
            return Err(ApiError::bad(format!("Invalid 'n': {n} with a repair; a repaired request has one sample (send one request per sample).")).param("n"));
        }
        let subject = subject.ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the repair has no prompt text"))?;
        let out = repair::run(st, subject, &choice, r, ids, params, c.ignore_eos, arrived, deadline).await?;
        let mut report = out.report;
        report["seed"] = json!(seed);
        report["method"] = json!(choice.name());
        for (k, v) in extra {
            report[k] = v;
        }
        report["repair"] = out.repair;
        let choice = match kind {
            Kind::Completion => json!({"index": 0, "text": out.text, "logprobs": null, "finish_reason": out.finish_reason}),
            Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": out.text}, "logprobs": null, "finish_reason": out.finish_reason}),
        };
        let object = if kind == Kind::Chat { "chat.completion" } else { "text_completion" };
        return Ok(Json(json!({
            "id": new_id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }), "object": object, "created": now(), "model": cfg.model_id, "system_fingerprint": null,
            "choices": [choice], "usage": usage(out.prompt_tokens, out.completion_tokens), "deepguard": report,
        }))
        .into_response());
    }
    let (tx, mut rx) = unbounded_channel();
    let job = Job { prompt: ids, params, prepare: st.methods.prepare(choice, c.ignore_eos), events: tx, arrived, deadline: Some(deadline) };
    if st.engine.submit(job).is_err() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down."));
    }
    // Wait for admission: a method that cannot apply (e.g. no vector for that CWE) is a 400.
    let mut report = match rx.recv().await {
        Some(Event::Started { report }) => report,
        Some(Event::Failed { status, message }) => return Err(ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), message)),
        _ => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The decoding engine stopped.")),
    };
    report["seed"] = json!(seed);
    for (k, v) in extra {
        report[k] = v;
    }
    let head = Head { id: new_id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }), created: now(), model: cfg.model_id.clone(), kind, n: n as usize, report };
    if c.stream {
        Ok(stream(head, rx, c.include_usage, st.engine.metrics.clone()).into_response())
    } else {
        collect(head, rx).await
    }
}

struct Head {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    n: usize,
    report: Value,
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(prompt: usize, generated: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated})
}

async fn collect(h: Head, mut rx: UnboundedReceiver<Event>) -> Result<Response, ApiError> {
    let mut texts = vec![String::new(); h.n];
    let mut reasons = vec![None; h.n];
    loop {
        match rx.recv().await {
            Some(Event::Text { sample, delta }) => texts[sample].push_str(&delta),
            Some(Event::Finished { sample, reason, .. }) => reasons[sample] = Some(reason),
            Some(Event::Started { .. }) => {}
            Some(Event::Failed { status, message }) => return Err(ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), message)),
            Some(Event::Done { prompt_tokens, generated_tokens }) => {
                let choices: Vec<Value> = texts
                    .into_iter()
                    .zip(reasons)
                    .enumerate()
                    .map(|(i, (text, r))| {
                        let fr = r.map(finish_reason).unwrap_or("length");
                        match h.kind {
                            Kind::Completion => json!({"index": i, "text": text, "logprobs": null, "finish_reason": fr}),
                            Kind::Chat => json!({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": fr}),
                        }
                    })
                    .collect();
                let object = if h.kind == Kind::Chat { "chat.completion" } else { "text_completion" };
                return Ok(Json(json!({
                    "id": h.id, "object": object, "created": h.created, "model": h.model, "system_fingerprint": null,
                    "choices": choices, "usage": usage(prompt_tokens, generated_tokens), "deepguard": h.report,
                }))
                .into_response());
            }
            None => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The decoding engine stopped.")),
        }
    }
}

/// Server-sent events in OpenAI's chunk format. The first chunk (a chat's `role` delta, an
/// empty completion text) carries the `deepguard` report; each choice ends with a chunk holding
/// its finish reason; `data: [DONE]` ends the stream. A failure mid-stream is sent as an
/// `{"error": ...}` event with no `[DONE]`, so clients raise instead of taking a cut answer for
/// a whole one. Dropping the stream (the client went away) frees the request's rows at the
/// engine's next step.
fn stream(h: Head, rx: UnboundedReceiver<Event>, include_usage: bool, metrics: Arc<crate::metrics::Metrics>) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let object = if h.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
    let chunk = move |h: &Head, choices: Vec<Value>, extra: Option<(&str, Value)>| -> SseEvent {
        let mut v = json!({"id": h.id, "object": object, "created": h.created, "model": h.model, "system_fingerprint": null, "choices": choices});
        if let Some((k, x)) = extra {
            v[k] = x;
        }
        SseEvent::default().data(v.to_string())
    };
    let choice = move |kind: Kind, i: usize, text: Option<&str>, role: bool, fr: Option<&str>| -> Value {
        match kind {
            Kind::Completion => json!({"index": i, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": fr}),
            Kind::Chat => {
                let mut d = json!({});
                if role {
                    d["role"] = json!("assistant");
                    d["content"] = json!("");
                }
                if let Some(t) = text {
                    d["content"] = json!(t);
                }
                json!({"index": i, "delta": d, "logprobs": null, "finish_reason": fr})
            }
        }
    };
    let first = chunk(&h, (0..h.n).map(|i| choice(h.kind, i, None, true, None)).collect(), Some(("deepguard", h.report.clone())));
    enum St {
        First(SseEvent),
        Running,
        /// `[DONE]` next.
        Last,
        Done,
    }
    let state = (St::First(first), h, rx);
    let s = futures_util::stream::unfold(state, move |(st, h, mut rx)| {
        let metrics = metrics.clone();
        async move {
        match st {
            St::First(ev) => return Some((Ok(ev), (St::Running, h, rx))),
            St::Last => return Some((Ok(SseEvent::default().data("[DONE]")), (St::Done, h, rx))),
            St::Done => return None,
            St::Running => {}
        }
        let ev = match rx.recv().await {
            Some(Event::Text { sample, delta }) => chunk(&h, vec![choice(h.kind, sample, Some(&delta), false, None)], None),
            Some(Event::Finished { sample, reason, .. }) => chunk(&h, vec![choice(h.kind, sample, None, false, Some(finish_reason(reason)))], None),
            Some(Event::Started { .. }) => SseEvent::default().comment("started"),
            Some(Event::Done { prompt_tokens, generated_tokens }) => {
                if include_usage {
                    let u = chunk(&h, vec![], Some(("usage", usage(prompt_tokens, generated_tokens))));
                    return Some((Ok(u), (St::Last, h, rx)));
                }
                return Some((Ok(SseEvent::default().data("[DONE]")), (St::Done, h, rx)));
            }
            Some(Event::Failed { status, message }) => {
                metrics.requests_failed.fetch_add(1, Relaxed);
                let e = ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), message);
                return Some((Ok(SseEvent::default().data(e.body().to_string())), (St::Done, h, rx)));
            }
            None => {
                metrics.requests_failed.fetch_add(1, Relaxed);
                let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The decoding engine stopped.");
                return Some((Ok(SseEvent::default().data(e.body().to_string())), (St::Done, h, rx)));
            }
        };
        Some((Ok(ev), (St::Running, h, rx)))
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
