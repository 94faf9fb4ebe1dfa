//! The model cache and the short names of the models the project installs.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

pub struct KnownModel {
    pub name: &'static str,
    pub file: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    pub description: &'static str,
}

/// Must match `scripts/fetch_models.py`, which installs these files.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2, 24 layers, d=896)",
    },
    KnownModel {
        name: "qwen2.5-coder-1.5b",
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (qwen2, 28 layers, d=1536; not installed by default)",
    },
    KnownModel {
        name: "smollm2-135m",
        file: "smollm2-135m-instruct-q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama, 30 layers, d=576)",
    },
];

pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";

/// `$DEEPGUARD_MODELS`, else `models/` in [`home`].
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEEPGUARD_MODELS") {
        return PathBuf::from(d);
    }
    home().join("models")
}

/// deepguard's home, found at run time: `$DEEPGUARD_HOME`; else the checkout the running binary
/// belongs to (`<checkout>/target/<profile>/deepguard`, recognised by its `scripts/setup.sh`); else
/// the current folder's checkout; else `$XDG_DATA_HOME/deepguard` (`~/.local/share/deepguard`).
/// Models, the eval venv (`.venv`) and the project's dev security tests live there.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("DEEPGUARD_HOME") {
        return PathBuf::from(h);
    }
    let is_checkout = |d: &Path| d.join("scripts/setup.sh").is_file() && d.join("Cargo.toml").is_file();
    let exe = std::env::current_exe().ok().and_then(|e| e.canonicalize().ok());
    let cwd = std::env::current_dir().ok();
    for start in exe.iter().chain(cwd.iter()) {
        if let Some(d) = start.ancestors().find(|d| is_checkout(d)) {
            return d.to_path_buf();
        }
    }
    let data = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")));
    data.unwrap_or_else(|| PathBuf::from(".")).join("deepguard")
}

/// A default path next to deepguard's home: `../shared/data/<rel>` as laid out for the project
/// (the benchmark and the pair data), falling back to the current folder's `../shared/data`.
pub fn shared_data(rel: &str) -> PathBuf {
    let by_home = home().join("../shared/data").join(rel);
    if by_home.exists() {
        return by_home;
    }
    Path::new("../shared/data").join(rel)
}

/// Resolves `--model`: a short name, a GGUF file, or a Hugging Face folder.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    if let Some(m) = KNOWN_MODELS.iter().find(|m| m.name == spec) {
        let path = models_dir().join(m.file);
        let hint = format!("install it with: python3 {}/scripts/fetch_models.py {}", home().display(), m.name);
        match std::fs::metadata(&path) {
            Err(_) => bail!("model `{spec}` is not installed (expected {}); {hint}", path.display()),
            Ok(md) if md.len() != m.size => bail!(
                "model file {} is incomplete or corrupt ({} bytes, expected {}); {hint}",
                path.display(),
                md.len(),
                m.size
            ),
            Ok(_) => return Ok(path),
        }
    }
    let p = PathBuf::from(spec);
    if p.exists() {
        return Ok(p);
    }
    let names: Vec<_> = KNOWN_MODELS.iter().map(|m| m.name).collect();
    bail!("model `{spec}` is neither a known name ({}) nor an existing file or folder", names.join(", "))
}
