//! Counters, gauges and histograms of the server, rendered in the Prometheus text format at
//! `GET /metrics`. Plain atomics: the engine thread and the HTTP tasks update them without locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A histogram with fixed upper bounds (seconds), Prometheus-style cumulative on output.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_us: AtomicU64::new(0), count: AtomicU64::new(0) }
    }

    pub fn observe(&self, secs: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {n}");
    }
}

const LATENCY: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

pub struct Metrics {
    pub requests_ok: AtomicU64,
    /// Refused before reaching the engine (bad input, auth, too long) or failed in it.
    pub requests_failed: AtomicU64,
    /// The client went away before the end.
    pub requests_cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Requests waiting for a slot in the batch.
    pub queue_depth: AtomicU64,
    /// Requests being decoded (or prefilled).
    pub active_requests: AtomicU64,
    /// Sequences (rows) in the batch.
    pub active_rows: AtomicU64,
    pub decode_steps: AtomicU64,
    /// Tokens produced by forward passes, and the seconds they took (microseconds).
    pub step_tokens: AtomicU64,
    pub step_us: AtomicU64,
    /// Tokens/s of the last step (f64 bits).
    pub last_tokens_per_sec: AtomicU64,
    pub ttft: Histogram,
    pub latency: Histogram,
    /// Requests ended by the server's time limit (`--request-timeout`); also counted as failed.
    pub requests_timed_out: AtomicU64,
    /// Connections taken, and those refused over `--max-connections`.
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
    /// Connections closed for a request head slower than `--header-timeout`, or for sending
    /// nothing for `--idle-timeout`.
    pub connections_header_timeout: AtomicU64,
    pub connections_idle_timeout: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests_ok: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            requests_cancelled: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            active_requests: AtomicU64::new(0),
            active_rows: AtomicU64::new(0),
            decode_steps: AtomicU64::new(0),
            step_tokens: AtomicU64::new(0),
            step_us: AtomicU64::new(0),
            last_tokens_per_sec: AtomicU64::new(0f64.to_bits()),
            ttft: Histogram::new(LATENCY),
            latency: Histogram::new(LATENCY),
            requests_timed_out: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_header_timeout: AtomicU64::new(0),
            connections_idle_timeout: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// A step: a forward pass over `forward` tokens that yielded `generated` new tokens, in `secs`.
    pub fn step(&self, forward: usize, generated: usize, secs: f64) {
        self.decode_steps.fetch_add(1, Relaxed);
        self.step_tokens.fetch_add(forward as u64, Relaxed);
        self.generated_tokens.fetch_add(generated as u64, Relaxed);
        self.step_us.fetch_add((secs * 1e6) as u64, Relaxed);
        self.last_tokens_per_sec.store((generated as f64 / secs.max(1e-9)).to_bits(), Relaxed);
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let _ = writeln!(o, "# HELP deepguard_requests_total Requests by outcome.\n# TYPE deepguard_requests_total counter");
        for (k, v) in [("ok", &self.requests_ok), ("failed", &self.requests_failed), ("cancelled", &self.requests_cancelled)] {
            let _ = writeln!(o, "deepguard_requests_total{{outcome=\"{k}\"}} {}", v.load(Relaxed));
        }
        counter(&mut o, "deepguard_prompt_tokens_total", "Prompt tokens prefilled.", self.prompt_tokens.load(Relaxed));
        counter(&mut o, "deepguard_generated_tokens_total", "Tokens generated.", self.generated_tokens.load(Relaxed));
        counter(&mut o, "deepguard_forward_passes_total", "Batched forward passes (decode steps, with any prefill chunks).", self.decode_steps.load(Relaxed));
        counter(&mut o, "deepguard_forward_tokens_total", "Tokens through batched forward passes (prefill and decode).", self.step_tokens.load(Relaxed));
        let _ = writeln!(o, "# HELP deepguard_forward_seconds_total Time in batched forward passes and sampling.\n# TYPE deepguard_forward_seconds_total counter\ndeepguard_forward_seconds_total {}", self.step_us.load(Relaxed) as f64 / 1e6);
        gauge(&mut o, "deepguard_queue_depth", "Requests waiting for a slot in the batch.", self.queue_depth.load(Relaxed) as f64);
        gauge(&mut o, "deepguard_active_requests", "Requests in the batch.", self.active_requests.load(Relaxed) as f64);
        gauge(&mut o, "deepguard_batch_rows", "Sequences decoded together (a request with n > 1 has n).", self.active_rows.load(Relaxed) as f64);
        gauge(&mut o, "deepguard_tokens_per_second", "Tokens generated per second in the last batched step.", f64::from_bits(self.last_tokens_per_sec.load(Relaxed)));
        counter(&mut o, "deepguard_requests_timed_out_total", "Requests ended by the server's time limit (--request-timeout); also counted as failed.", self.requests_timed_out.load(Relaxed));
        let _ = writeln!(o, "# HELP deepguard_connections_total Connections accepted, refused over the cap, and closed by a timeout.\n# TYPE deepguard_connections_total counter");
        for (k, v) in [("accepted", &self.connections_accepted), ("refused", &self.connections_refused), ("header_timeout", &self.connections_header_timeout), ("idle_timeout", &self.connections_idle_timeout)] {
            let _ = writeln!(o, "deepguard_connections_total{{event=\"{k}\"}} {}", v.load(Relaxed));
        }
        gauge(&mut o, "deepguard_connections_open", "Connections open now (at most --max-connections).", self.connections_open.load(Relaxed) as f64);
        self.ttft.render(&mut o, "deepguard_time_to_first_token_seconds", "From arrival to the first generated token.");
        self.latency.render(&mut o, "deepguard_request_duration_seconds", "From arrival to the last token.");
        o
    }
}
