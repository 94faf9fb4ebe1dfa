//! Reading GGUF files: header, metadata and tensors, with errors that name the file and the problem.

use crate::config::{Arch, ModelConfig, RopeStyle};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::{GgmlDType, QTensor};
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
        let content = read_content(&mut reader, file_size).map_err(|e| {
            let hint = if e.to_string().contains("truncated") { " (re-run `python3 scripts/fetch_models.py` to replace it)" } else { "" };
            anyhow!("{}: corrupt GGUF: {e}{hint}", path.display())
        })?;
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

/// Tensors have at most this many dimensions (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// Arrays of arrays nest at most this deep.
const MAX_DEPTH: usize = 4;

/// Reads a GGUF file's header, metadata and tensor table into candle's [`Content`], checking
/// every count, length, type, shape and offset against the `file_size` bytes of the file before
/// anything is allocated: a declared length can never ask for more memory than the file could
/// hold (a string or array length of 2^60 is an error, not an allocation), shapes cannot
/// overflow, every tensor lies inside the file. Errors do not name the file (callers do).
pub fn read_content<R: Read + Seek>(r: &mut R, file_size: u64) -> Result<Content> {
    let mut rd = Rd { r, pos: 0, size: file_size, v1: false };
    let magic = rd.u32("magic")?;
    if magic != 0x4655_4747 {
        bail!("not a GGUF file (magic {magic:#010x})");
    }
    let version = rd.u32("version")?;
    let magic = match version {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => bail!("unsupported GGUF version {v} (1, 2 and 3 are known)"),
    };
    rd.v1 = version == 1;
    let n_tensors = rd.len("tensor count")?;
    let n_kv = rd.len("metadata count")?;
    // Every entry takes some bytes: counts beyond what is left cannot be right.
    let prefix = if rd.v1 { 4 } else { 8 };
    let need = n_kv.saturating_mul(prefix + 4 + 1).saturating_add(n_tensors.saturating_mul(prefix + 4 + 4 + 8));
    if need > rd.left() {
        bail!("truncated or corrupt: {n_tensors} tensors and {n_kv} metadata entries declared, {} bytes left", rd.left());
    }
    let mut metadata = std::collections::HashMap::new();
    for i in 0..n_kv {
        let key = rd.string(&format!("metadata key #{i}"))?;
        let k = show(&key);
        let ty = rd.u32(&format!("type of {k}"))?;
        let value = rd.value(ty, 0, &k)?;
        if metadata.insert(key, value).is_some() {
            bail!("metadata key {k} appears twice");
        }
    }
    let mut tensor_infos = std::collections::HashMap::new();
    for i in 0..n_tensors {
        let name = rd.string(&format!("tensor name #{i}"))?;
        let nm = show(&name);
        let n_dims = rd.u32(&format!("dimension count of tensor {nm}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            bail!("tensor {nm} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)");
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = rd.len(&format!("dimension of tensor {nm}"))?;
            if d == 0 || d > i64::MAX as u64 {
                bail!("tensor {nm} has a dimension of {d}");
            }
            dims.push(d as usize);
        }
        dims.reverse();
        let code = rd.u32(&format!("type of tensor {nm}"))?;
        let ggml_dtype = dtype_from_u32(code).ok_or_else(|| anyhow!("tensor {nm} has unknown type {code}"))?;
        let offset = rd.u64(&format!("offset of tensor {nm}"))?;
        let info = TensorInfo { ggml_dtype, shape: candle_core::Shape::from(dims), offset };
        if tensor_infos.insert(name.clone(), info).is_some() {
            bail!("tensor {nm} appears twice");
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => candle_core::quantized::gguf_file::DEFAULT_ALIGNMENT,
        Some(v) => match value_to_u64(v) {
            Some(a) if a > 0 && a <= 1 << 20 && !matches!(v, Value::Bool(_)) => a,
            _ => bail!("general.alignment is {} (a positive integer up to 2^20 expected)", short_value(v)),
        },
    };
    let tensor_data_offset = rd.pos.div_ceil(alignment).checked_mul(alignment).ok_or_else(|| anyhow!("tensor data offset overflows"))?;
    for (name, info) in &tensor_infos {
        let nm = show(name);
        let elems = info.shape.dims().iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("tensor {nm} has too many elements {:?}", info.shape.dims()))?;
        let bs = info.ggml_dtype.block_size();
        if elems % bs != 0 || info.shape.dims().last().is_some_and(|d| d % bs != 0) {
            bail!("tensor {nm} of shape {:?} does not fill whole {:?} blocks of {bs}", info.shape.dims(), info.ggml_dtype);
        }
        let bytes = (elems / bs).checked_mul(info.ggml_dtype.type_size()).ok_or_else(|| anyhow!("tensor {nm} is too large"))? as u64;
        let end = tensor_data_offset.checked_add(info.offset).and_then(|x| x.checked_add(bytes));
        match end {
            Some(end) if end <= file_size => {}
            _ => bail!(
                "truncated or corrupt: tensor {nm} ({bytes} bytes at offset {}) ends beyond the file's {file_size} bytes",
                info.offset
            ),
        }
    }
    Ok(Content { magic, metadata, tensor_infos, tensor_data_offset })
}

/// A name read from the file, for an error message: escaped (one line), at most 60 characters.
pub(crate) fn show(name: &str) -> String {
    let e: String = name.escape_debug().collect();
    match e.char_indices().nth(60) {
        Some((i, _)) => format!("`{}…`", &e[..i]),
        None => format!("`{e}`"),
    }
}

/// ggml's type codes (candle's own table is private).
fn dtype_from_u32(code: u32) -> Option<GgmlDType> {
    Some(match code {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// A bounds-checked little-endian reader over the first `size` bytes.
struct Rd<'a, R> {
    r: &'a mut R,
    pos: u64,
    size: u64,
    v1: bool,
}

impl<R: Read> Rd<'_, R> {
    fn left(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        if (N as u64) > self.left() {
            bail!("truncated: {what} at byte {} runs past the end of the file ({} bytes)", self.pos, self.size);
        }
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).with_context(|| format!("truncated: cannot read {what} at byte {}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.fixed(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.fixed(what)?))
    }

    /// A length or count (u32 in version 1, u64 after).
    fn len(&mut self, what: &str) -> Result<u64> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        if n > self.left() {
            bail!("truncated or corrupt: {what} declares {n} bytes at byte {}, {} left in the file", self.pos, self.left());
        }
        let mut v = vec![0u8; n as usize];
        self.r.read_exact(&mut v).with_context(|| format!("truncated: cannot read {what}"))?;
        self.pos += n;
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.fixed::<1>(key)?[0]),
            1 => Value::I8(self.fixed::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.fixed(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.fixed(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.fixed(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.fixed(key)?)),
            7 => match self.fixed::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("metadata {key}: boolean byte {b}"),
            },
            8 => Value::String(self.string(&format!("metadata {key}"))?),
            9 => {
                if depth >= MAX_DEPTH {
                    bail!("metadata {key}: arrays nested deeper than {MAX_DEPTH}");
                }
                let et = self.u32(key)?;
                let n = self.len(key)?;
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => if self.v1 { 4 } else { 8 },
                    9 => if self.v1 { 8 } else { 12 },
                    t => bail!("metadata {key}: unknown array element type {t}"),
                };
                if n.saturating_mul(min) > self.left() {
                    bail!("truncated or corrupt: metadata {key} declares {n} array elements at byte {}, {} bytes left", self.pos, self.left());
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(et, depth + 1, key)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.fixed(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.fixed(key)?)),
            t => bail!("metadata {key}: unknown value type {t}"),
        })
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
