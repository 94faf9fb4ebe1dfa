//! metrics.jsonl (one line per step and per validation) and the loss plot drawn from it.

use deepguard_runtime::files::write_atomic;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Appends to metrics.jsonl (truncated to the checkpoint's lines on resume).
pub(super) struct Metrics {
    file: std::fs::File,
    pub(super) lines: usize,
}

impl Metrics {
    pub(super) fn open(path: &Path, keep_lines: Option<usize>) -> Result<Self> {
        let lines = match keep_lines {
            Some(n) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let kept: Vec<&str> = text.lines().take(n).collect();
                let mut s = kept.join("\n");
                if !s.is_empty() {
                    s.push('\n');
                }
                write_atomic(path, s.as_bytes())?;
                kept.len()
            }
            None => {
                std::fs::write(path, b"").with_context(|| format!("cannot write {}", path.display()))?;
                0
            }
        };
        let file = std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file, lines })
    }

    pub(super) fn log(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}")?;
        self.file.flush()?;
        self.lines += 1;
        Ok(())
    }
}


/// loss.svg from metrics.jsonl: training loss components per step and validation loss.
pub fn write_loss_plot(metrics: &Path, out: &Path) -> Result<()> {
    use crate::plot::{line_chart, Series};
    let text = std::fs::read_to_string(metrics).with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut s: Vec<Vec<(f64, f64)>> = vec![vec![]; 5];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: bad line", metrics.display()))?;
        let step = v["step"].as_f64().unwrap_or(0.0);
        if v["val"].as_bool() == Some(true) {
            if let Some(l) = v["stats"]["loss"].as_f64() {
                s[4].push((step, l));
            }
        } else {
            for (k, name) in ["loss", "gen", "sec", "kl"].iter().enumerate() {
                if let Some(x) = v[*name].as_f64() {
                    s[k].push((step, x));
                }
            }
        }
    }
    let ymax = s.iter().flatten().map(|p| p.1).fold(0.1, f64::max) * 1.05;
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#000000"];
    let labels = ["train loss", "train L_gen", "train L_sec", "train L_kl", "validation loss"];
    let series: Vec<Series> = s
        .into_iter()
        .enumerate()
        .map(|(i, pts)| Series { label: labels[i].to_string(), points: pts, dashed: i == 4, color: colors[i] })
        .collect();
    let svg = line_chart("DeepGuard training", "optimizer step", "loss", (0.0, ymax), &series, &[]);
    write_atomic(out, svg.as_bytes())
}

