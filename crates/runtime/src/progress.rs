//! Progress for long jobs: an indicatif bar on a terminal; when stderr is not a terminal (a job
//! in the background with a log), one plain line every 30 seconds instead, so logs show how far
//! a run is and when it will end.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: ProgressBar,
    label: String,
    unit: &'static str,
    tty: bool,
    last: Mutex<Instant>,
    every: Duration,
}

impl Progress {
    pub fn new(len: u64, label: &str, unit: &'static str) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(Some(len), if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
        bar.set_style(
            ProgressStyle::with_template(&format!("{label} {{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}  {{msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self { bar, label: label.to_string(), unit, tty, last: Mutex::new(Instant::now()), every: Duration::from_secs(30) }
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.log_line();
    }

    pub fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.log_line();
    }

    /// Without a terminal: a plain line when 30 s have passed since the last one, or at the end.
    fn log_line(&self) {
        if self.tty {
            return;
        }
        let mut last = self.last.lock().expect("progress lock");
        if last.elapsed() >= self.every || self.bar.position() == self.bar.length().unwrap_or(0) {
            *last = Instant::now();
            let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
            let rate = self.bar.per_sec();
            let eta = if rate > 0.0 { (len.saturating_sub(pos)) as f64 / rate } else { 0.0 };
            eprintln!("{}: {pos}/{len} {} ({rate:.1}/s, ETA {:.0}s) {}", self.label, self.unit, eta, self.bar.message());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
