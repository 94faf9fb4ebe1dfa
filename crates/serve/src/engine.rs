//! The batching engine: one thread owns the model's compute and decodes every admitted request
//! together (continuous batching).
//!
//! Each step is one forward pass over a ragged batch ([`Decoder::forward_ragged`]): every
//! decoding request contributes one token per live sample at its own position, and requests
//! still reading their prompt contribute a chunk of it (at most `prefill_chunk` prompt tokens
//! per step in all, so a long prompt delays the others by a bounded amount). A sample that ends
//! leaves its request's rows at once; a request whose samples have all ended leaves the batch;
//! a waiting request joins at the next step as soon as its rows fit under `max_batch`. No
//! request waits for another to finish.
//!
//! Guidance is per request: residual hooks (steering) and the adapter switch (a guard's LoRA)
//! apply to that request's rows only, logits processors (a guard's bias) to its rows' logits.
//! A request sees exactly the operations of [`generate`](deepguard_runtime::generate::generate)
//! run on it alone ([`Decoding`] is shared), so its output does not depend on its neighbours.
//!
//! [`Decoder::forward_ragged`]: deepguard_runtime::Decoder::forward_ragged

use crate::metrics::Metrics;
use anyhow::{anyhow, Result};
use candle_core::Tensor;
use deepguard_runtime::decoder::Segment;
use deepguard_runtime::generate::{Decoding, FinishReason, Guidance, SamplingParams};
use deepguard_runtime::hooks::ResidualHook;
use deepguard_runtime::Model;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// A request's guidance, ready to decode with.
pub struct Prepared {
    pub guidance: Guidance<'static>,
    /// Run this request's rows with the model's adapters.
    pub lora: bool,
    /// What was applied, reported back to the client.
    pub report: serde_json::Value,
}

/// Computes a request's guidance on the engine thread (a guard scores the prompt with a forward
/// pass of the model).
pub type Prepare = Box<dyn FnOnce(&Model, &[u32]) -> Result<Prepared> + Send>;

pub struct Job {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub prepare: Prepare,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
    /// The request's time limit: past it, waiting or running, it ends with a 504.
    pub deadline: Option<Instant>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Admitted to the batch; what the method applied.
    Started { report: serde_json::Value },
    Text { sample: usize, delta: String },
    /// Sample `sample` ended after `tokens` tokens.
    Finished { sample: usize, reason: FinishReason, tokens: usize },
    /// Every sample ended.
    Done { prompt_tokens: usize, generated_tokens: usize },
    /// The request failed (HTTP status and message); no more events follow. (The HTTP side
    /// counts failures in the metrics; the engine counts completions and cancellations.)
    Failed { status: u16, message: String },
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences (rows) decoded together at most.
    pub max_batch: usize,
    /// Prompt tokens prefilled per step at most, over all joining requests.
    pub prefill_chunk: usize,
}

#[derive(Default)]
struct Control {
    /// Set on shutdown: refuse new work, finish what runs until the deadline, then cancel it.
    drain_deadline: Mutex<Option<Instant>>,
    stopped: AtomicBool,
}

/// The HTTP side's handle on the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: Sender<Job>,
    control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Engine {
    /// Starts the engine thread on `model` (adapters already attached if any request may use them).
    pub fn spawn(model: Arc<Model>, cfg: EngineConfig, metrics: Arc<Metrics>) -> Engine {
        let (tx, rx) = std::sync::mpsc::channel();
        let control = Arc::new(Control::default());
        let (c, m) = (control.clone(), metrics.clone());
        let thread = std::thread::Builder::new()
            .name("deepguard-engine".into())
            .spawn(move || {
                let mut e = Loop { model, cfg, rx, control: c, metrics: m, waiting: VecDeque::new(), active: Vec::new() };
                e.run();
            })
            .expect("spawning the engine thread");
        Engine { tx, control, metrics, thread: Arc::new(Mutex::new(Some(thread))) }
    }

    /// Queues a job. Fails when the engine is shutting down or gone.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        if self.is_draining() {
            return Err(job);
        }
        self.metrics.queue_depth.fetch_add(1, Relaxed);
        self.tx.send(job).map_err(|e| {
            self.metrics.queue_depth.fetch_sub(1, Relaxed);
            e.0
        })
    }

    pub fn is_draining(&self) -> bool {
        self.control.drain_deadline.lock().unwrap().is_some() || self.control.stopped.load(Relaxed)
    }

    /// Stops taking work; running requests may finish within `grace`, then are cancelled.
    pub fn drain(&self, grace: Duration) {
        let mut d = self.control.drain_deadline.lock().unwrap();
        if d.is_none() {
            *d = Some(Instant::now() + grace);
        }
    }

    /// Waits for the engine thread to end (after [`drain`](Self::drain)).
    pub fn join(&self) {
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

/// A request in the batch.
struct Active {
    dec: Decoding,
    guidance: Guidance<'static>,
    lora: bool,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    events: UnboundedSender<Event>,
    reported: Vec<bool>,
    arrived: Instant,
    deadline: Option<Instant>,
    first_token: bool,
}

impl Active {
    fn prefilling(&self) -> bool {
        self.prefilled < self.prompt.len()
    }
    /// Rows this request holds in the batch (all n while it reads its prompt).
    fn rows(&self) -> usize {
        if self.prefilling() {
            self.dec.params.n
        } else {
            self.dec.rows()
        }
    }
    fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

/// What one request contributes to a step.
struct Plan {
    idx: usize,
    rows: usize,
    t: usize,
    prefill: bool,
    logits: bool,
}

struct Loop {
    model: Arc<Model>,
    cfg: EngineConfig,
    rx: Receiver<Job>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    waiting: VecDeque<Job>,
    active: Vec<Active>,
}

fn fail(events: &UnboundedSender<Event>, status: u16, message: impl Into<String>) {
    let _ = events.send(Event::Failed { status, message: message.into() });
}

impl Loop {
    fn run(&mut self) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                if self.control.drain_deadline.lock().unwrap().is_some() {
                    break;
                }
                match self.rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(j) => self.waiting.push_back(j),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while let Ok(j) = self.rx.try_recv() {
                self.waiting.push_back(j);
            }
            let deadline = *self.control.drain_deadline.lock().unwrap();
            if let Some(d) = deadline {
                for j in self.waiting.drain(..) {
                    self.metrics.queue_depth.fetch_sub(1, Relaxed);
                    fail(&j.events, 503, "the server is shutting down");
                }
                if Instant::now() >= d {
                    for a in self.active.drain(..) {
                        a.send(Event::Failed { status: 503, message: "the server is shutting down: request cancelled".into() });
                    }
                }
            }
            self.drop_cancelled();
            self.expire();
            self.admit();
            self.update_gauges();
            if self.active.is_empty() {
                continue;
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step()));
            let err = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(p) => Some(p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panic".into())),
            };
            if let Some(e) = err {
                // A failed forward pass leaves the caches in an unknown state: end every request in it.
                for a in self.active.drain(..) {
                    a.send(Event::Failed { status: 500, message: format!("decoding failed: {e}") });
                }
            }
            self.update_gauges();
        }
        self.control.stopped.store(true, Relaxed);
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.active_requests.store(self.active.len() as u64, Relaxed);
        m.active_rows.store(self.active.iter().map(Active::rows).sum::<usize>() as u64, Relaxed);
    }

    /// Requests whose client went away leave the queue and the batch (their rows free at once).
    fn drop_cancelled(&mut self) {
        let m = &self.metrics;
        self.waiting.retain(|j| {
            let gone = j.events.is_closed();
            if gone {
                m.queue_depth.fetch_sub(1, Relaxed);
                m.requests_cancelled.fetch_add(1, Relaxed);
            }
            !gone
        });
        self.active.retain(|a| {
            let gone = a.events.is_closed();
            if gone {
                m.requests_cancelled.fetch_add(1, Relaxed);
            }
            !gone
        });
    }

    /// Requests past their time limit leave the queue and the batch with a 504.
    fn expire(&mut self) {
        let now = Instant::now();
        let late = |d: Option<Instant>| d.is_some_and(|d| now >= d);
        let m = &self.metrics;
        let message = "The request did not finish within the server's time limit (--request-timeout).";
        self.waiting.retain(|j| {
            if late(j.deadline) {
                m.queue_depth.fetch_sub(1, Relaxed);
                m.requests_timed_out.fetch_add(1, Relaxed);
                fail(&j.events, 504, message);
                return false;
            }
            true
        });
        self.active.retain(|a| {
            if late(a.deadline) {
                m.requests_timed_out.fetch_add(1, Relaxed);
                a.send(Event::Failed { status: 504, message: message.into() });
                return false;
            }
            true
        });
    }

    /// Waiting requests join, in arrival order, while their rows fit.
    fn admit(&mut self) {
        let mut rows: usize = self.active.iter().map(Active::rows).sum();
        while let Some(j) = self.waiting.front() {
            let n = j.params.n;
            if rows + n > self.cfg.max_batch && !(rows == 0 && n > self.cfg.max_batch) {
                break;
            }
            let j = self.waiting.pop_front().unwrap();
            self.metrics.queue_depth.fetch_sub(1, Relaxed);
            if n > self.cfg.max_batch {
                fail(&j.events, 400, format!("n = {n} exceeds the server's batch of {} sequences (--max-batch)", self.cfg.max_batch));
                continue;
            }
            if j.events.is_closed() {
                self.metrics.requests_cancelled.fetch_add(1, Relaxed);
                continue;
            }
            match self.start(j) {
                Ok(a) => {
                    rows += a.rows();
                    self.active.push(a);
                }
                Err((events, e)) => {
                    fail(&events, 400, format!("{e:#}"));
                }
            }
        }
    }

    fn start(&self, j: Job) -> Result<Active, (UnboundedSender<Event>, anyhow::Error)> {
        let Job { prompt, params, prepare, events, arrived, deadline } = j;
        let dec = match Decoding::new(&self.model, prompt.len(), &params) {
            Ok(d) => d,
            Err(e) => return Err((events, e)),
        };
        let prepared = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(&self.model, &prompt))) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err((events, e)),
            Err(_) => return Err((events, anyhow!("preparing the method failed"))),
        };
        let _ = events.send(Event::Started { report: prepared.report });
        self.metrics.prompt_tokens.fetch_add(prompt.len() as u64, Relaxed);
        Ok(Active { reported: vec![false; params.n], dec, guidance: prepared.guidance, lora: prepared.lora, prompt, prefilled: 0, events, arrived, deadline, first_token: false })
    }

    /// One forward pass over every request in the batch, then one sampling step for each
    /// request that got logits.
    fn step(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let mut budget = self.cfg.prefill_chunk.max(1);
        let mut plans = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for (idx, a) in self.active.iter().enumerate() {
            if a.prefilling() {
                if budget == 0 {
                    continue;
                }
                let t = (a.prompt.len() - a.prefilled).min(budget);
                budget -= t;
                ids.extend_from_slice(&a.prompt[a.prefilled..a.prefilled + t]);
                plans.push(Plan { idx, rows: 1, t, prefill: true, logits: a.prefilled + t == a.prompt.len() });
            } else if !a.dec.is_done() {
                ids.extend_from_slice(a.dec.next_tokens());
                plans.push(Plan { idx, rows: a.dec.rows(), t: 1, prefill: false, logits: true });
            }
        }
        let logits = if plans.is_empty() {
            vec![]
        } else {
            // Each planned request lends its cache and hooks to the pass.
            let mut hook_refs: Vec<Vec<&dyn ResidualHook>> = Vec::with_capacity(plans.len());
            let mut caches = Vec::with_capacity(plans.len());
            let mut lora = Vec::with_capacity(plans.len());
            let mut next_plan = plans.iter().peekable();
            for (idx, a) in self.active.iter_mut().enumerate() {
                if next_plan.peek().is_some_and(|p| p.idx == idx) {
                    next_plan.next();
                    hook_refs.push(a.guidance.hooks.iter().map(|h| h.as_ref() as &dyn ResidualHook).collect());
                    caches.push(&mut a.dec.cache);
                    lora.push(a.lora);
                }
            }
            let mut segs: Vec<Segment> = caches
                .into_iter()
                .zip(&hook_refs)
                .zip(&plans)
                .zip(lora)
                .map(|(((cache, hooks), p), lora)| Segment { cache, rows: p.rows, t: p.t, hooks: hooks.as_slice(), lora, logits: p.logits })
                .collect();
            self.model.decoder.forward_ragged(&ids, &mut segs)?
        };
        // Requests that finished their prompt get their n rows; then every request with
        // logits samples one token per live row.
        let mut work: Vec<(usize, Tensor)> = Vec::new();
        for (p, l) in plans.iter().zip(logits) {
            let a = &mut self.active[p.idx];
            if p.prefill {
                a.prefilled += p.t;
            }
            if let Some(l) = l {
                let l = if p.prefill { a.dec.prefilled(l)? } else { l };
                work.push((p.idx, l));
            }
        }
        // Requests with nothing to generate (max_tokens 0) end right after their prompt.
        let mut rows_out = 0;
        let mut sampled: Vec<(usize, Vec<Vec<f32>>)> = Vec::with_capacity(work.len());
        for (idx, l) in work {
            let a = &mut self.active[idx];
            if a.dec.is_done() {
                continue;
            }
            sampled.push((idx, a.dec.processed_rows(&l, &mut a.guidance.processors)?));
        }
        let next = self.sample_all(&mut sampled);
        for ((idx, _), next) in sampled.iter().zip(next) {
            let a = &mut self.active[*idx];
            rows_out += next.len();
            if !a.first_token {
                a.first_token = true;
                self.metrics.ttft.observe(a.arrived.elapsed().as_secs_f64());
            }
            let events = a.events.clone();
            a.dec.accept(&self.model, next, &mut |s, delta| {
                let _ = events.send(Event::Text { sample: s, delta: delta.to_string() });
            })?;
        }
        self.metrics.step(ids.len(), rows_out, t0.elapsed().as_secs_f64());
        // Report finished samples and requests; finished requests leave.
        let m = &self.metrics;
        self.active.retain_mut(|a| {
            if a.prefilling() {
                return true;
            }
            for s in 0..a.reported.len() {
                if !a.reported[s] {
                    if let Some(reason) = a.dec.finish_reason(s).or_else(|| a.dec.is_done().then_some(FinishReason::Length)) {
                        a.reported[s] = true;
                        a.send(Event::Finished { sample: s, reason, tokens: a.dec.sample_tokens(s) });
                    }
                }
            }
            if !a.dec.is_done() {
                return true;
            }
            let generated = (0..a.reported.len()).map(|s| a.dec.sample_tokens(s)).sum();
            a.send(Event::Done { prompt_tokens: a.prompt.len(), generated_tokens: generated });
            m.requests_ok.fetch_add(1, Relaxed);
            m.latency.observe(a.arrived.elapsed().as_secs_f64());
            false
        });
        Ok(())
    }

    /// Samples every request's rows, requests spread over threads (each request's draws come
    /// from its own generators, so the split changes nothing).
    fn sample_all(&mut self, work: &mut [(usize, Vec<Vec<f32>>)]) -> Vec<Vec<u32>> {
        let mut decs: Vec<Option<&mut Decoding>> = self.active.iter_mut().map(|a| Some(&mut a.dec)).collect();
        let mut jobs: Vec<(&mut Decoding, &mut Vec<Vec<f32>>)> = work.iter_mut().map(|(i, rows)| (decs[*i].take().expect("one job per request"), rows)).collect();
        let sampled_rows: usize = jobs.iter().filter(|(d, _)| d.params.temperature > 0.0).map(|(_, r)| r.len()).sum();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(jobs.len());
        if threads <= 1 || sampled_rows < 2 {
            return jobs.iter_mut().map(|(d, rows)| d.sample(rows)).collect();
        }
        let per = jobs.len().div_ceil(threads);
        std::thread::scope(|sc| {
            let handles: Vec<_> = jobs.chunks_mut(per).map(|js| sc.spawn(move || js.iter_mut().map(|(d, rows)| d.sample(rows)).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().expect("sampling thread")).collect()
        })
    }
}
