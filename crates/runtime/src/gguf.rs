//! Reading GGUF files: header, metadata and tensors, with errors that name the file and the problem.

use crate::config::{Arch, ModelConfig, RopeStyle};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

/// An opened, validated GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
    pub file_size: u64,
}

impl GgufFile {
    /// Opens a GGUF file and checks that it is complete: the magic, the header, and that every
    /// tensor's bytes lie inside the file (a truncated download is caught here, not mid-load).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open model file {}", path.display()))?;
        let file_size = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        reader
            .read_exact(&mut magic)
            .map_err(|_| anyhow!("{}: file is too short to be a GGUF file ({file_size} bytes)", path.display()))?;
        if &magic != b"GGUF" {
            bail!("{}: not a GGUF file (magic bytes {:02x?}, expected \"GGUF\")", path.display(), magic);
        }
        reader.rewind()?;
        let content = Content::read(&mut reader)
            .map_err(|e| anyhow!("{}: corrupt GGUF header: {e}", path.display()))?;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let bs = info.ggml_dtype.block_size();
            if elems % bs != 0 {
                bail!("{}: tensor {name} has {elems} elements, not a multiple of its block size {bs}", path.display());
            }
            let bytes = (elems / bs * info.ggml_dtype.type_size()) as u64;
            let end = content.tensor_data_offset + info.offset + bytes;
            if end > file_size {
                bail!(
                    "{}: truncated or corrupt GGUF: tensor {name} ends at byte {end} but the file has {file_size} bytes \
                     (re-run `python3 scripts/fetch_models.py` to replace it)",
                    path.display()
                );
            }
        }
        Ok(Self { path: path.to_path_buf(), content, reader, file_size })
    }

    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta(key).and_then(|v| v.to_string().ok()).map(|s| s.as_str())
    }

    pub fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self.meta(key).ok_or_else(|| anyhow!("{}: metadata key `{key}` is missing", self.path.display()))?;
        value_to_u64(v).map(|x| x as usize).ok_or_else(|| anyhow!("{}: metadata `{key}` is not an integer", self.path.display()))
    }

    pub fn meta_f64(&self, key: &str) -> Option<f64> {
        match self.meta(key)? {
            Value::F32(x) => Some(*x as f64),
            Value::F64(x) => Some(*x),
            v => value_to_u64(v).map(|x| x as f64),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            bail!("{}: tensor `{name}` is missing", self.path.display());
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| anyhow!("{}: cannot read tensor `{name}`: {e}", self.path.display()))
    }

    /// Architecture hyper-parameters from the `<arch>.*` metadata keys.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch_name = self
            .meta_str("general.architecture")
            .ok_or_else(|| anyhow!("{}: metadata `general.architecture` is missing", self.path.display()))?;
        let arch = Arch::parse(arch_name).with_context(|| format!("{}", self.path.display()))?;
        let a = arch_name;
        let hidden_size = self.meta_usize(&format!("{a}.embedding_length"))?;
        let n_heads = self.meta_usize(&format!("{a}.attention.head_count"))?;
        let n_kv_heads = self.meta_usize(&format!("{a}.attention.head_count_kv")).unwrap_or(n_heads);
        let head_dim = self
            .meta_usize(&format!("{a}.attention.key_length"))
            .or_else(|_| self.meta_usize(&format!("{a}.rope.dimension_count")))
            .unwrap_or(hidden_size / n_heads.max(1));
        let embd = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or_else(|| anyhow!("{}: tensor `token_embd.weight` is missing", self.path.display()))?;
        // candle reports GGUF shapes outermost-first: [vocab, hidden].
        let vocab_size = embd.shape.dims()[0];
        let cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: self.meta_usize(&format!("{a}.feed_forward_length"))?,
            n_layers: self.meta_usize(&format!("{a}.block_count"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_theta: self.meta_f64(&format!("{a}.rope.freq_base")).unwrap_or(10_000.0) as f32,
            rope_style: match arch {
                Arch::Llama => RopeStyle::Interleaved,
                Arch::Qwen2 => RopeStyle::Neox,
            },
            rms_norm_eps: self.meta_f64(&format!("{a}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
            context_length: self.meta_usize(&format!("{a}.context_length")).unwrap_or(4096),
            tie_embeddings: !self.has_tensor("output.weight"),
            qkv_bias: self.has_tensor("blk.0.attn_q.bias"),
        };
        cfg.validate().with_context(|| format!("{}", self.path.display()))?;
        Ok(cfg)
    }

    /// Quantization types present, with the number of tensors of each, most common first.
    pub fn dtype_histogram(&self) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for info in self.content.tensor_infos.values() {
            *counts.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Fingerprint of the model: sha256 over the file size, sorted metadata keys with the
    /// architecture values, and every tensor's name, type, shape and offset. Cheap (no weight
    /// bytes are read) yet changes with any re-quantization or different checkpoint layout.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.file_size.to_le_bytes());
        let mut names: Vec<_> = self.content.tensor_infos.iter().collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        for (n, i) in names {
            h.update(format!("{n}:{:?}:{:?}:{};", i.ggml_dtype, i.shape.dims(), i.offset).as_bytes());
        }
        let mut keys: Vec<_> = self.content.metadata.iter().filter(|(k, _)| !k.starts_with("tokenizer.")).collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in keys {
            h.update(format!("{k}={};", short_value(v)).as_bytes());
        }
        hex(&h.finalize()[..16])
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn value_to_u64(v: &Value) -> Option<u64> {
    Some(match v {
        Value::U8(x) => *x as u64,
        Value::I8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::I16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::I32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I64(x) => *x as u64,
        Value::Bool(b) => *b as u64,
        _ => return None,
    })
}

/// A short printable form of a metadata value (arrays shown by length).
pub fn short_value(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() > 80 => format!("{:?}… ({} chars)", &s[..s.char_indices().nth(60).map(|c| c.0).unwrap_or(s.len())], s.len()),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("[{} items]", a.len()),
        Value::F32(x) => format!("{x}"),
        Value::F64(x) => format!("{x}"),
        other => value_to_u64(other).map(|x| x.to_string()).unwrap_or_default(),
    }
}
