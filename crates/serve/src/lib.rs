//! deepguard-serve: an OpenAI-compatible HTTP server that applies a security guard and/or
//! steering vectors while it generates, with continuous batching.
//!
//! - [`engine`]: one thread owns the model and decodes every admitted request together, each at
//!   its own position, with its own method (`Decoder::forward_ragged`); requests join and leave
//!   the batch between steps.
//! - [`edge`]: the connections: a cap on how many are open, a header-read timeout and an idle
//!   timeout (hyper, HTTP/1.1).
//! - [`http`]: axum routes: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`,
//!   `GET /health`, `GET /metrics` (Prometheus); bearer-token auth, body cap, a time limit per
//!   request, OpenAI error objects, server-sent events.
//! - [`methods`]: the server's guard, steering vectors and repair checks, and a request's choice
//!   among them, prompt variants included (its
//!   `deepguard` extension field); the method and the prompt's security score go back in the
//!   response's `deepguard` field.
//! - [`repair`]: the check-repair loop per request (`repair:R`): the draft's code checked by the
//!   static tools in a blocking task, flagged code generated again with the findings.
//! - [`api`]: the wire format.
//!
//! `deepguard serve` is a thin shell over [`serve`].

pub mod api;
pub mod edge;
pub mod engine;
pub mod http;
pub mod methods;
pub mod metrics;
pub mod repair;

use anyhow::{Context, Result};
use edge::EdgeConfig;
use deepguard_runtime::Model;
use engine::{Engine, EngineConfig};
use http::{AppState, HttpConfig};
use methods::Methods;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Everything `deepguard serve` sets.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    pub http: HttpConfig,
    pub edge: EdgeConfig,
    pub prefill_chunk: usize,
    /// On SIGTERM/SIGINT: running requests may finish within this, then are cancelled.
    pub shutdown_grace: Duration,
}

/// A server ready to listen: the model, its methods and the engine thread.
pub struct Server {
    state: AppState,
    grace: Duration,
    edge: EdgeConfig,
}

impl Server {
    /// Starts the engine on `model` (with the guard's adapters attached by `methods`). The
    /// context limit is clamped to the model's.
    pub fn new(model: Model, methods: Methods, mut http: HttpConfig, prefill_chunk: usize, grace: Duration) -> Server {
        http.ctx = http.ctx.min(model.cfg().context_length);
        let model = Arc::new(model);
        let metrics = Arc::new(metrics::Metrics::default());
        let engine = Engine::spawn(model.clone(), EngineConfig { max_batch: http.max_batch, prefill_chunk }, metrics);
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Server { state: AppState { engine, model, methods: Arc::new(methods), cfg: Arc::new(http), created }, grace, edge: EdgeConfig::default() }
    }

    /// The connection limits ([`EdgeConfig::default`] unless set).
    pub fn with_edge(mut self, edge: EdgeConfig) -> Server {
        self.edge = edge;
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves; then refuses new requests, lets running
    /// ones finish within the grace period (cancelling the rest), and returns once every
    /// connection has closed and the engine has stopped.
    pub async fn run(self, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let engine = self.state.engine.clone();
        let grace = self.grace;
        let app = self.router();
        let e2 = engine.clone();
        let signal = async move {
            shutdown.await;
            eprintln!("shutting down: refusing new requests, finishing running ones (at most {:.0}s)", grace.as_secs_f64());
            e2.drain(grace);
        };
        edge::serve(listener, app, self.edge, engine.metrics.clone(), signal).await;
        engine.drain(grace);
        tokio::task::spawn_blocking(move || engine.join()).await?;
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs the server until SIGTERM/SIGINT: binds `host:port` (printing `listening on
/// http://ADDR` on stderr once bound, so a caller using port 0 learns the port), then serves.
pub fn serve(model: Model, methods: Methods, cfg: ServeConfig, on_listen: impl FnOnce(SocketAddr)) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("deepguard-http").enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port)).await.with_context(|| format!("cannot listen on {}:{}", cfg.host, cfg.port))?;
        let addr = listener.local_addr()?;
        let server = Server::new(model, methods, cfg.http, cfg.prefill_chunk, cfg.shutdown_grace).with_edge(cfg.edge);
        on_listen(addr);
        server.run(listener, shutdown_signal()).await
    })
}
