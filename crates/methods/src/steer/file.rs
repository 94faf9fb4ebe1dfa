//! A steering vector and its file: llama.cpp's control-vector GGUF layout (one F32 tensor
//! `direction.<layer>`, `controlvector.*` keys) plus `deepguard.*` keys for its provenance, probe
//! and centroid; and which vectors a `--steer` value names.

use crate::data::Cwe;
use crate::probe::logreg::LogReg;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use deepguard_runtime::hooks::AddVector;
use deepguard_runtime::Model;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One steering vector with its provenance and its probe.
#[derive(Debug, Clone, Serialize)]
pub struct SteerVector {
    /// None: built from all CWEs together.
    pub cwe: Option<Cwe>,
    /// Decoder block whose output is steered (0-based; = llama.cpp's `direction.<layer>`).
    pub layer: usize,
    #[serde(skip)]
    pub direction: Vec<f32>,
    pub model_arch: String,
    pub model_fingerprint: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_pairs: usize,
    /// How the representations were taken (window, pooling).
    pub position: String,
    /// Secure-vs-vulnerable probe at this layer (raw space; p = sigmoid(w.h + b) is p(secure)).
    #[serde(skip)]
    pub probe: Option<LogReg>,
    /// Mean representation of this CWE's code (both sides), for routing prompts to a CWE.
    #[serde(skip)]
    pub centroid: Vec<f32>,
}

fn meta_str<'a>(c: &'a gguf_file::Content, k: &str) -> Option<&'a str> {
    c.metadata.get(k).and_then(|v| v.to_string().ok()).map(|s| s.as_str())
}

fn meta_u64(c: &gguf_file::Content, k: &str) -> Option<u64> {
    c.metadata.get(k).and_then(deepguard_runtime::gguf::value_to_u64)
}

fn meta_f32s(c: &gguf_file::Content, k: &str) -> Option<Vec<f32>> {
    match c.metadata.get(k)? {
        Value::Array(a) => a.iter().map(|v| v.to_f32().ok()).collect(),
        _ => None,
    }
}

impl SteerVector {
    pub fn norm(&self) -> f32 {
        self.direction.iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    /// Writes the vector as a llama.cpp control vector (one F32 tensor `direction.<layer>`,
    /// `controlvector.*` keys) plus `deepguard.*` keys, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.layer == 0 {
            bail!("{}: block 0 cannot be stored in llama.cpp's control-vector format (direction.0 is invalid there); choose a layer >= 1", path.display());
        }
        let dev = Device::Cpu;
        let t = QTensor::quantize(&Tensor::from_slice(&self.direction, self.hidden, &dev)?, GgmlDType::F32)?;
        let arr = |v: &[f32]| Value::Array(v.iter().map(|x| Value::F32(*x)).collect());
        let mut md: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("controlvector".into())),
            ("controlvector.model_hint".into(), Value::String(self.model_arch.clone())),
            ("controlvector.layer_count".into(), Value::I32(1)),
            ("deepguard.cwe".into(), Value::String(self.cwe.map(|c| c.to_string()).unwrap_or_else(|| "all".into()))),
            ("deepguard.layer".into(), Value::U32(self.layer as u32)),
            ("deepguard.model_fingerprint".into(), Value::String(self.model_fingerprint.clone())),
            ("deepguard.n_layers".into(), Value::U32(self.n_layers as u32)),
            ("deepguard.hidden_size".into(), Value::U32(self.hidden as u32)),
            ("deepguard.n_pairs".into(), Value::U32(self.n_pairs as u32)),
            ("deepguard.position".into(), Value::String(self.position.clone())),
            ("deepguard.centroid".into(), arr(&self.centroid)),
        ];
        if let Some(p) = &self.probe {
            md.push(("deepguard.probe.weights".into(), arr(&p.w)));
            md.push(("deepguard.probe.bias".into(), Value::F32(p.b)));
        }
        let name = format!("direction.{}", self.layer);
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut buf = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &md_refs, &[(name.as_str(), &t)])?;
        deepguard_runtime::files::write_atomic(path, &buf.into_inner())
    }

    pub fn load(path: &Path) -> Result<SteerVector> {
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open steering vector {}", path.display()))?;
        let size = f.metadata().with_context(|| format!("cannot read steering vector {}", path.display()))?.len();
        let c = deepguard_runtime::gguf::read_content(&mut std::io::BufReader::new(&mut f), size).map_err(|e| anyhow!("{}: not a readable GGUF file: {e}", path.display()))?;
        if meta_str(&c, "general.architecture") != Some("controlvector") {
            bail!("{}: not a control vector (general.architecture is {:?})", path.display(), meta_str(&c, "general.architecture"));
        }
        let missing = |k: &str| anyhow!("{}: metadata `{k}` is missing (not written by deepguard steer build?)", path.display());
        let layer = meta_u64(&c, "deepguard.layer").ok_or_else(|| missing("deepguard.layer"))? as usize;
        let name = format!("direction.{layer}");
        if !c.tensor_infos.contains_key(&name) {
            bail!("{}: tensor `{name}` is missing", path.display());
        }
        let direction = c
            .tensor(&mut f, &name, &Device::Cpu)
            .and_then(|t| t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| anyhow!("{}: cannot read tensor `{name}`: {e}", path.display()))?;
        let hidden = meta_u64(&c, "deepguard.hidden_size").ok_or_else(|| missing("deepguard.hidden_size"))? as usize;
        if direction.len() != hidden {
            bail!("{}: `{name}` has {} values but the file says hidden size {hidden}", path.display(), direction.len());
        }
        let cwe = match meta_str(&c, "deepguard.cwe").ok_or_else(|| missing("deepguard.cwe"))? {
            "all" => None,
            s => Some(Cwe::parse(s).with_context(|| path.display().to_string())?),
        };
        let probe = match (meta_f32s(&c, "deepguard.probe.weights"), c.metadata.get("deepguard.probe.bias").and_then(|v| v.to_f32().ok())) {
            (Some(w), Some(b)) if w.len() == hidden => Some(LogReg { w, b }),
            _ => None,
        };
        Ok(SteerVector {
            cwe,
            layer,
            direction,
            model_arch: meta_str(&c, "controlvector.model_hint").unwrap_or("").to_string(),
            model_fingerprint: meta_str(&c, "deepguard.model_fingerprint").ok_or_else(|| missing("deepguard.model_fingerprint"))?.to_string(),
            n_layers: meta_u64(&c, "deepguard.n_layers").unwrap_or(0) as usize,
            hidden,
            n_pairs: meta_u64(&c, "deepguard.n_pairs").unwrap_or(0) as usize,
            position: meta_str(&c, "deepguard.position").unwrap_or("").to_string(),
            probe,
            centroid: meta_f32s(&c, "deepguard.centroid").unwrap_or_default(),
        })
    }

    /// Refuses a vector built for another model: hidden size, layer range, fingerprint.
    pub fn check_model(&self, model: &Model, path: &Path) -> Result<()> {
        let cfg = model.cfg();
        if self.hidden != cfg.hidden_size {
            bail!("{}: vector has dimension {} but model {} has hidden size {}", path.display(), self.hidden, model.info.path.display(), cfg.hidden_size);
        }
        if self.layer >= cfg.n_layers {
            bail!("{}: vector is for block {} but the model has {} blocks", path.display(), self.layer, cfg.n_layers);
        }
        if self.model_fingerprint != model.info.fingerprint {
            bail!(
                "{}: vector was built for model fingerprint {} but {} has fingerprint {}",
                path.display(),
                self.model_fingerprint,
                model.info.path.display(),
                model.info.fingerprint
            );
        }
        Ok(())
    }

    /// The residual hook: alpha * v after block `layer` at every position >= `from_pos`.
    pub fn hook(&self, alpha: f64, from_pos: usize) -> Result<AddVector> {
        AddVector::new(self.layer, &Tensor::from_slice(&self.direction, self.hidden, &Device::Cpu)?, alpha, from_pos)
    }
}

/// File name of a vector in a vector folder: `cwe-089.gguf`, or `all.gguf`.
pub fn file_name(cwe: Option<Cwe>) -> String {
    cwe.map(|c| c.slug()).unwrap_or_else(|| "all".into()) + ".gguf"
}

/// What `--steer` names: a vector file or folder, and which vector.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// The only vector of a file.
    File,
    Cwe(Cwe),
    /// Probe-then-steer over every vector of a folder.
    Auto,
}

/// Parses `PATH`, `PATH:CWE` or `PATH:auto`.
pub fn parse_steer_arg(s: &str) -> Result<(PathBuf, Selector)> {
    if let Some((p, sel)) = s.rsplit_once(':') {
        if sel == "auto" {
            return Ok((PathBuf::from(p), Selector::Auto));
        }
        if let Ok(c) = Cwe::parse(sel) {
            return Ok((PathBuf::from(p), Selector::Cwe(c)));
        }
    }
    Ok((PathBuf::from(s), Selector::File))
}

/// Loads the vectors `--steer` names, all checked against `model`.
pub fn load_selected(path: &Path, sel: &Selector, model: &Model) -> Result<Vec<(PathBuf, SteerVector)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        match sel {
            Selector::Cwe(c) => vec![path.join(file_name(Some(*c)))],
            _ => {
                let mut f: Vec<PathBuf> = std::fs::read_dir(path)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "gguf")).collect();
                f.sort();
                f
            }
        }
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        bail!("{}: no steering vectors (*.gguf) here", path.display());
    }
    let mut out = Vec::new();
    for f in files {
        if !f.exists() {
            bail!("{}: no such steering vector (build it with `deepguard steer build`)", f.display());
        }
        let v = SteerVector::load(&f)?;
        v.check_model(model, &f)?;
        if let Selector::Cwe(c) = sel {
            if v.cwe != Some(*c) {
                bail!("{}: holds the vector for {}, not {c}", f.display(), v.cwe.map(|c| c.to_string()).unwrap_or("all CWEs".into()));
            }
        }
        out.push((f, v));
    }
    Ok(out)
}

