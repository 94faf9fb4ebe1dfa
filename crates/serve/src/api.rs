//! The OpenAI wire format: request bodies (parsed strictly: a known field of the wrong type is a
//! 400, an unknown field is ignored as OpenAI's own server does), error objects, and the
//! `deepguard` extension field.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// An error as OpenAI reports it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, code: None }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }
    pub fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 => "service_unavailable",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Parses a JSON body into `T`; a syntax error or a field of the wrong type is a 400 naming the
/// field.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let r: Result<T, _> = serde_path_to_error::deserialize(de);
    r.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("We could not parse the JSON body of your request: {inner}. (The body must be a JSON object.)")
            }
            _ if path == "." => format!("Invalid request body: {inner}"),
            _ => format!("Invalid value for '{path}': {inner}"),
        };
        let mut err = ApiError::bad(msg);
        if path != "." {
            err = err.param(&path);
        }
        err
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The `deepguard` extension of a request: which method to apply. Absent fields take the
/// server's flags (`--guard`, `--guard-strength`, `--steer`, `--alpha`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepguardOptions {
    /// Apply the server's guard (its adapters, and the prompt-conditioned logit bias).
    pub guard: Option<bool>,
    pub guard_strength: Option<f32>,
    /// `true` (the server's --steer), `false`, `"auto"` (probe-then-steer over the server's
    /// vector folder) or a CWE (`"CWE-89"`, the folder's vector for it).
    pub steer: Option<Value>,
    pub alpha: Option<f64>,
    /// A prompt variant: `"secure"`, `"cwe"` (routed by the server's vectors), or `false`.
    pub prompt: Option<Value>,
    /// The check-repair loop: its rounds (`2`), or `false`/`0` for none.
    pub repair: Option<Value>,
    /// A whole method spec, as `deepguard generate --method` takes it (instead of the fields
    /// above), naming the server's guard and vector folders.
    pub method: Option<String>,
    /// A completion prompt's language (`"python"` or `"c"`): the reminder's comment syntax and
    /// the repair loop's checks. Without it: C when the prompt has an `#include`, else Python.
    pub language: Option<String>,
}

/// Defines a request struct with the sampling fields both endpoints share (written out in
/// each struct rather than flattened, so that a type error names its field).
macro_rules! request {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Deserialize)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            pub model: Option<String>,
            pub max_tokens: Option<u64>,
            pub temperature: Option<f64>,
            pub top_p: Option<f64>,
            pub n: Option<u64>,
            pub stop: Option<Value>,
            /// Any integer 0..=u64::MAX; checked where it is used (a negative one is a 400).
            pub seed: Option<serde_json::Number>,
            pub stream: Option<bool>,
            pub stream_options: Option<StreamOptions>,
            pub deepguard: Option<DeepguardOptions>,
            /// Keep generating past end-of-sequence tokens (as llama-server's and vLLM's
            /// `ignore_eos`): every sample runs to `max_tokens`. For benchmarks.
            pub ignore_eos: Option<bool>,
            // accepted only at their neutral values
            pub presence_penalty: Option<f64>,
            pub frequency_penalty: Option<f64>,
            pub logit_bias: Option<serde_json::Map<String, Value>>,
            pub logprobs: Option<Value>,
            pub top_logprobs: Option<u64>,
            pub user: Option<String>,
        }
    };
}

request!(
    /// `POST /v1/completions`.
    CompletionRequest {
        prompt: Option<Value>,
        echo: Option<bool>,
        suffix: Option<String>,
        best_of: Option<u64>,
    }
);

request!(
    /// `POST /v1/chat/completions`.
    ChatRequest {
        messages: Option<Vec<ChatMessage>>,
        max_completion_tokens: Option<u64>,
        tools: Option<Vec<Value>>,
        response_format: Option<Value>,
    }
);

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

/// The prompt of a completion request: a string, one string in an array, or token ids.
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}

pub fn prompt_input(v: Option<&Value>, vocab: usize) -> Result<PromptInput, ApiError> {
    let bad = |m: &str| ApiError::bad(m).param("prompt");
    let ids = |a: &[Value]| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|x| match x.as_u64() {
                Some(i) if (i as usize) < vocab => Ok(i as u32),
                _ => Err(bad(&format!("Invalid value for 'prompt': token ids must be integers in 0..{vocab}, got {x}"))),
            })
            .collect()
    };
    match v {
        None | Some(Value::Null) => Err(bad("Missing required parameter: 'prompt'.")),
        Some(Value::String(s)) => Ok(PromptInput::Text(s.clone())),
        Some(Value::Array(a)) if a.is_empty() => Err(bad("Invalid value for 'prompt': an empty array.")),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => match a.len() {
            1 => Ok(PromptInput::Text(a[0].as_str().unwrap().to_string())),
            k => Err(bad(&format!("Invalid value for 'prompt': {k} prompts in one request; send one prompt per request (concurrent requests are batched together)."))),
        },
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => Ok(PromptInput::Tokens(ids(a)?)),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => Ok(PromptInput::Tokens(ids(a[0].as_array().unwrap())?)),
        Some(other) => Err(bad(&format!("Invalid type for 'prompt': expected a string, an array of strings or an array of token ids, got {}.", type_name(other)))),
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `stop`: a string or an array of up to 4 non-empty strings.
pub fn stop_strings(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::bad(m).param("stop");
    let list = match v {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(format!("Invalid type for 'stop': expected strings, got {}.", type_name(x)))))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(bad(format!("Invalid type for 'stop': expected a string or an array of strings, got {}.", type_name(other)))),
    };
    if list.len() > 4 {
        return Err(bad(format!("Invalid value for 'stop': at most 4 stop sequences, got {}.", list.len())));
    }
    if list.iter().any(String::is_empty) {
        return Err(bad("Invalid value for 'stop': stop sequences must not be empty.".into()));
    }
    Ok(list)
}

/// A chat message's text: a string, or an array of `{"type": "text", "text": ...}` parts.
pub fn message_text(m: &ChatMessage, i: usize) -> Result<String, ApiError> {
    let param = format!("messages.[{i}].content");
    match &m.content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => return Err(ApiError::bad(format!("Invalid value for '{param}': only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported.")).param(&param)),
                }
            }
            Ok(out)
        }
        other => Err(ApiError::bad(format!("Invalid type for '{param}': expected a string or an array of text parts, got {}.", type_name(other))).param(&param)),
    }
}
