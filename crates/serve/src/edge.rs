//! The connection edge: accepts TCP connections and serves HTTP/1.1 on them (hyper), with the
//! limits a client meets before any handler runs.
//!
//! - **Connection cap** (`max_connections`): a connection over the cap is answered at once with a
//!   503 (OpenAI's error object, `Retry-After: 1`) and closed; it is never queued. Its close
//!   lingers at most [`LINGER`] (reading off what the client sends, so that the close does not
//!   reset the answer away), for at most [`LINGERING`] connections at once; past that it is
//!   closed outright. So the server holds at most the cap plus [`LINGERING`] sockets.
//! - **Header timeout** (`header_timeout`): once the first byte of a request has arrived, its
//!   whole head (request line and headers) must arrive within this, or the connection is closed.
//! - **Idle timeout** (`idle_timeout`): a connection that is not sending a request (fresh, or
//!   kept alive after a response) is closed after this long without a byte.
//!
//! While a request runs (its body being read, its answer being generated or streamed) neither
//! timeout applies; the request's own time limit does (`--request-timeout`, in [`crate::http`]).
//! On shutdown the listener closes, idle connections close, and running requests finish.

use crate::api::ApiError;
use crate::metrics::Metrics;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// How long a refused connection's close may wait for the client's request to arrive.
pub const LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once at most.
pub const LINGERING: usize = 64;

/// The limits of the connection edge (`deepguard serve --header-timeout --idle-timeout
/// --max-connections`).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(30), max_connections: 256 }
    }
}

/// Why the edge closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Header,
    Idle,
}

/// What one connection is doing, shared by its reader, its requests and its watchdog.
struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Requests whose response has not been written out in full.
    in_flight: usize,
    /// Since when the connection has been waiting for a request (its start, or the end of the
    /// last response).
    waiting_since: Instant,
    /// The first byte of the next request, if one has arrived.
    first_byte: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self { state: Mutex::new(State { in_flight: 0, waiting_since: Instant::now(), first_byte: None }), changed: Notify::new() }
    }

    fn bytes_read(&self) {
        let mut s = self.state.lock().unwrap();
        if s.in_flight == 0 && s.first_byte.is_none() {
            s.first_byte = Some(Instant::now());
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut s = self.state.lock().unwrap();
        s.in_flight += 1;
        s.first_byte = None;
        self.changed.notify_one();
    }

    fn request_ended(&self) {
        let mut s = self.state.lock().unwrap();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.waiting_since = Instant::now();
            s.first_byte = None;
        }
        self.changed.notify_one();
    }

    /// When the connection expires if nothing changes, and why.
    fn deadline(&self, cfg: &EdgeConfig) -> Option<(Instant, Expiry)> {
        let s = self.state.lock().unwrap();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.first_byte {
            Some(t) => (t + cfg.header_timeout, Expiry::Header),
            None => (s.waiting_since + cfg.idle_timeout, Expiry::Idle),
        })
    }
}

/// The socket, telling its connection's [`Activity`] when bytes arrive.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request of a connection, from its head to the end of its response: dropped with the
/// response body (hyper drops it once written out), or with the request if it never got one.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> Self {
        a.request_started();
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that holds its request's [`InFlight`].
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// connection finish its running request, and returns once all have closed.
pub async fn serve(listener: TcpListener, app: Router, cfg: EdgeConfig, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let lingering = Arc::new(Semaphore::new(LINGERING));
    let (signal_tx, signal_rx) = watch::channel(());
    let (close_tx, close_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut last_error: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused) {
                        // e.g. out of file descriptors: say so once a minute, retry shortly
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            eprintln!("accepting a connection failed: {e} (retrying)");
                            last_error = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics.connections_accepted.fetch_add(1, Relaxed);
                let c = Connection { app: app.clone(), cfg: cfg.clone(), metrics: metrics.clone(), _permit: permit, _close: close_rx.clone() };
                tokio::spawn(c.run(stream, signal_rx.clone()));
            }
            Err(_) => {
                metrics.connections_refused.fetch_add(1, Relaxed);
                let answer = refusal(cfg.max_connections);
                match lingering.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(LINGER, refuse(stream, answer)).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let _ = stream.try_write(answer.as_bytes());
                    }
                }
            }
        }
    }
    drop(listener);
    signal_tx.send_replace(());
    drop(close_rx);
    close_tx.closed().await;
}

/// The 503 a connection over the cap gets.
fn refusal(cap: usize) -> String {
    let body = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Too many connections: this server holds at most {cap} at once (--max-connections). Retry later."))
        .code("too_many_connections")
        .body()
        .to_string();
    format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}", body.len())
}

/// Writes the refusal, closes the sending side, and reads off what the client sends until it
/// closes too (the caller bounds this by [`LINGER`]): closing with unread bytes would send a
/// reset, which can make the client lose the answer.
async fn refuse(mut stream: TcpStream, answer: String) {
    let mut out = answer.as_bytes();
    while !out.is_empty() {
        if stream.writable().await.is_err() {
            return;
        }
        match stream.try_write(out) {
            Ok(n) => out = &out[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
    if std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// One accepted connection: it holds a slot of the cap until it closes.
struct Connection {
    app: Router,
    cfg: Arc<EdgeConfig>,
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
    /// Dropped when the connection ends; [`serve`] waits for all of them on shutdown.
    _close: watch::Receiver<()>,
}

impl Connection {
    async fn run(self, stream: TcpStream, mut shutdown: watch::Receiver<()>) {
        let m = self.metrics.clone();
        m.connections_open.fetch_add(1, Relaxed);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched { io: stream, activity: activity.clone() });
        let (app, act) = (self.app.clone(), activity.clone());
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&act);
            let mut app = app.clone();
            async move {
                let resp = match tower_service::Service::call(&mut app, req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                Ok::<_, Infallible>(resp.map(|b| Tracked { inner: b, _in_flight: in_flight }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // the edge's watchdog below times the head, not hyper's timer
        builder.header_read_timeout(None);
        let mut conn = pin!(builder.serve_connection(io, svc));
        let mut draining = false;
        loop {
            let deadline = activity.deadline(&self.cfg);
            let expire = async {
                match deadline {
                    Some((t, _)) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = activity.changed.notified() => {}
                _ = expire => {
                    // the state may have changed since the deadline was read
                    if let Some((t, why)) = activity.deadline(&self.cfg) {
                        if Instant::now() >= t {
                            match why {
                                Expiry::Header => m.connections_header_timeout.fetch_add(1, Relaxed),
                                Expiry::Idle => m.connections_idle_timeout.fetch_add(1, Relaxed),
                            };
                            break;
                        }
                    }
                }
                _ = shutdown.changed(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        m.connections_open.fetch_sub(1, Relaxed);
    }
}
