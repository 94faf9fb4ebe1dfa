//! Wall-clock time per decoder stage, for finding where a forward pass spends its time.
//!
//! Off unless `DEEPGUARD_PROFILE=1` (then each stage costs two clock reads). `generate` prints
//! the breakdown of its prefill and of its decode steps to stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Embed,
    Norm,
    /// q, k, v projections (with bias).
    Qkv,
    /// Rotary embedding, head transposes and the KV cache write.
    Rope,
    /// Scores, mask, softmax and the weighted sum of values.
    Attn,
    OProj,
    GateUp,
    /// SiLU(gate) * up.
    Act,
    Down,
    /// Residual additions and hooks.
    Residual,
    /// Final norm and output projection.
    Head,
    /// Logits to host rows, logits processors and sampling (generation only).
    Sample,
}

const N: usize = 12;
const NAMES: [&str; N] = ["embed", "norm", "qkv", "rope+cache", "attention", "o_proj", "gate+up", "silu*up", "down", "residual+hooks", "head", "sampling"];

static NS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// Of which inside the quantized matmul kernels (activation quantization included).
static KERNEL_NS: AtomicU64 = AtomicU64::new(0);

pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DEEPGUARD_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Times the stage until dropped (nothing when profiling is off).
pub struct Span(Option<(Stage, Instant)>);

pub fn span(s: Stage) -> Span {
    Span(enabled().then(|| (s, Instant::now())))
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((s, t)) = self.0 {
            NS[s as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

pub(crate) fn add_kernel(t: Instant) {
    KERNEL_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Prints the times accumulated since the last report (per `steps` forward passes) and resets.
pub fn report(label: &str, total_secs: f64, steps: usize) {
    if !enabled() {
        return;
    }
    let ns: Vec<u64> = NS.iter().map(|a| a.swap(0, Ordering::Relaxed)).collect();
    let kernel = KERNEL_NS.swap(0, Ordering::Relaxed) as f64 * 1e-6;
    let total = total_secs * 1e3;
    let steps = steps.max(1) as f64;
    let mut line = format!("[profile] {label}: {:.2} ms/step", total / steps);
    for (i, &v) in ns.iter().enumerate() {
        let ms = v as f64 * 1e-6;
        if ms > 0.0 {
            line += &format!(" | {} {:.2} ({:.0}%)", NAMES[i], ms / steps, 100.0 * ms / total);
        }
    }
    let staged: f64 = ns.iter().sum::<u64>() as f64 * 1e-6;
    line += &format!(" | other {:.2} ({:.0}%) || quantized matmul kernels {:.2} ({:.0}%)", (total - staged) / steps, 100.0 * (total - staged) / total, kernel / steps, 100.0 * kernel / total);
    eprintln!("{line}");
}
