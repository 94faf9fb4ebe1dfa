//! Run state and checkpoints: written atomically (state tensors, then the pointer file), so a
//! run killed at any point resumes from the last complete checkpoint.

use super::TrainConfig;
use crate::optim::AdamW;
use crate::params::Params;
use deepguard_runtime::files::write_atomic;
use anyhow::{anyhow, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where a run is: written with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub config: TrainConfig,
    pub data_hash: String,
    /// Optimizer steps taken.
    pub step: usize,
    pub epoch: usize,
    /// Steps completed within `epoch`.
    pub epoch_step: usize,
    pub best_val: Option<f64>,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    pub stopped: bool,
    /// Lines of metrics.jsonl that belong to this state.
    pub metrics_lines: usize,
    pub history: Vec<serde_json::Value>,
    /// Seconds spent training (excluding feature caching), summed over resumed runs.
    pub train_secs: f64,
}

impl RunState {
    /// A run that has not taken a step yet.
    pub fn fresh(config: &TrainConfig, data_hash: &str) -> Self {
        RunState { config: config.clone(), data_hash: data_hash.to_string(), step: 0, epoch: 0, epoch_step: 0, best_val: None, best_epoch: None, bad_epochs: 0, stopped: false, metrics_lines: 0, history: vec![], train_secs: 0.0 }
    }
}

pub(super) const CHECKPOINT: &str = "checkpoint.json";

pub(super) fn save_checkpoint(out: &Path, st: &RunState, params: &Params, opt: &AdamW) -> Result<()> {
    let dir = out.join("checkpoints").join(format!("step-{:06}", st.step));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut t: std::collections::HashMap<String, Tensor> = opt.state();
    for (k, v) in params.tensors() {
        t.insert(format!("p.{k}"), v);
    }
    deepguard_runtime::files::atomically(&dir.join("state.safetensors"), |tmp| Ok(candle_core::safetensors::save(&t, tmp)?))?;
    let mut j = serde_json::to_value(st)?;
    j["dir"] = serde_json::json!(dir.strip_prefix(out).unwrap_or(&dir));
    write_atomic(&out.join(CHECKPOINT), serde_json::to_string_pretty(&j)?.as_bytes())?;
    // Older checkpoints are no longer referenced.
    if let Ok(rd) = std::fs::read_dir(out.join("checkpoints")) {
        for e in rd.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

pub(super) fn load_checkpoint(out: &Path) -> Result<Option<(RunState, std::collections::HashMap<String, Tensor>)>> {
    let p = out.join(CHECKPOINT);
    if !p.exists() {
        return Ok(None);
    }
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?).with_context(|| format!("{}: not valid JSON", p.display()))?;
    let dir = out.join(j["dir"].as_str().ok_or_else(|| anyhow!("{}: no `dir`", p.display()))?);
    let st: RunState = serde_json::from_value(j).with_context(|| format!("{}: unreadable run state", p.display()))?;
    let f = dir.join("state.safetensors");
    let t = candle_core::safetensors::load(&f, &candle_core::Device::Cpu).with_context(|| format!("cannot read checkpoint {}", f.display()))?;
    Ok(Some((st, t)))
}

