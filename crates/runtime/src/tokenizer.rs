//! Tokenizer: rebuilt from GGUF metadata (or read from an HF `tokenizer.json`) with the
//! `tokenizers` crate, plus the special tokens and chat template a decoder needs.
//!
//! A GGUF file stores the BPE vocabulary, merges, token types and a pre-tokenizer name; we turn
//! that into the `tokenizer.json` document Hugging Face would ship, so both sources go through one
//! parser.

use crate::gguf::{value_to_u64, GgufFile};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

/// Pre-tokenizer split patterns, by the `tokenizer.ggml.pre` name llama.cpp writes.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token strings that end a turn or a document in the model families we support.
const END_TOKENS: &[&str] = &["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "</s>"];

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same tokenizer with special tokens read as plain text (built on first use).
    plain: OnceLock<tokenizers::Tokenizer>,
    /// The special (control) tokens' strings and ids, longest first.
    specials: Vec<(String, u32)>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
    /// Every token id that ends generation (EOS, end-of-turn tokens).
    pub stop_ids: HashSet<u32>,
    pub chat_template: Option<String>,
    pub vocab_size: usize,
}

impl Tokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path.display();
        let model = g.meta_str("tokenizer.ggml.model").unwrap_or("");
        if model != "gpt2" {
            bail!("{path}: tokenizer model {} is not supported (only byte-level BPE, `gpt2`)", crate::gguf::show(model));
        }
        let tokens = string_array(g, "tokenizer.ggml.tokens")?;
        let merges = string_array(g, "tokenizer.ggml.merges")?;
        let types: Vec<u64> = match g.meta("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a.iter().map(|v| value_to_u64(v).unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let pre = g.meta_str("tokenizer.ggml.pre").unwrap_or("default");
        let doc = bpe_tokenizer_json(&tokens, &types, &merges, pre).with_context(|| format!("{path}"))?;
        let inner = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&doc)?)
            .map_err(|e| anyhow!("{path}: cannot build the tokenizer from GGUF metadata: {}", crate::gguf::show(&e.to_string())))?;
        let id = |k: &str| -> Result<Option<u32>> {
            match g.meta(k).and_then(value_to_u64) {
                Some(x) if x < tokens.len() as u64 => Ok(Some(x as u32)),
                Some(x) => bail!("{path}: `{k}` is {x}, outside the vocabulary of {} tokens", tokens.len()),
                None => Ok(None),
            }
        };
        let bos_id = id("tokenizer.ggml.bos_token_id")?;
        let eos_id = id("tokenizer.ggml.eos_token_id")?;
        let mut stop_ids: HashSet<u32> = [eos_id, id("tokenizer.ggml.eot_token_id")?].into_iter().flatten().collect();
        for (i, t) in tokens.iter().enumerate() {
            if END_TOKENS.contains(&t.as_str()) && types.get(i).copied().unwrap_or(1) == 3 {
                stop_ids.insert(i as u32);
            }
        }
        let add_bos = matches!(g.meta("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        Ok(Self {
            specials: special_tokens(&inner),
            plain: OnceLock::new(),
            inner,
            bos_id,
            eos_id,
            add_bos,
            stop_ids,
            chat_template: g.meta_str("tokenizer.chat_template").map(str::to_string),
            vocab_size: tokens.len(),
        })
    }

    /// Loads `tokenizer.json` (+ `tokenizer_config.json` for the chat template and BOS/EOS) from
    /// a Hugging Face model folder.
    pub fn from_hf_dir(dir: &Path, eos_from_config: Option<u32>, bos_from_config: Option<u32>) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tj).map_err(|e| anyhow!("{}: {e}", tj.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.exists() {
            serde_json::from_slice(&std::fs::read(&cfg_path)?).with_context(|| format!("{}: invalid JSON", cfg_path.display()))?
        } else {
            json!({})
        };
        let tok_id = |key: &str| -> Option<u32> {
            let s = match &cfg[key] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o.get("content")?.as_str()?.to_string(),
                _ => return None,
            };
            inner.token_to_id(&s)
        };
        let eos_id = tok_id("eos_token").or(eos_from_config);
        let bos_id = tok_id("bos_token").or(bos_from_config);
        let mut stop_ids: HashSet<u32> = eos_id.into_iter().collect();
        for t in END_TOKENS {
            if let Some(i) = inner.token_to_id(t) {
                if inner.get_added_vocabulary().is_special_token(t) {
                    stop_ids.insert(i);
                }
            }
        }
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            add_bos: cfg["add_bos_token"].as_bool().unwrap_or(false),
            chat_template: cfg["chat_template"].as_str().map(str::to_string),
            specials: special_tokens(&inner),
            plain: OnceLock::new(),
            inner,
            bos_id,
            eos_id,
            stop_ids,
            vocab_size,
        })
    }

    /// Encodes text. Special-token strings in the text (e.g. `<|im_start|>`) become their ids;
    /// BOS is prepended when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("tokenizer: {e}"))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            if let Some(b) = self.bos_id {
                ids.push(b);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Encodes text in which special-token strings are ordinary characters: `<|im_start|>` in
    /// `text` becomes the tokens of its characters, never the control token. (Added tokens that
    /// are not special, GGUF's "user-defined" ones, are still matched, as llama.cpp does.) No BOS.
    /// For text a client wrote, e.g. a chat message's content.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let plain = self.plain.get_or_init(|| {
            let mut t = self.inner.clone();
            t.set_encode_special_tokens(true);
            t
        });
        let enc = plain.encode(text, false).map_err(|e| anyhow!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The special (control) tokens: their strings and ids, longest string first.
    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.specials.iter().any(|(_, i)| *i == id)
    }

    /// Splits `text` at the special tokens' strings (leftmost match, the longest where several
    /// start at one place), as [`encode`](Self::encode) reads them.
    pub fn split_special<'a>(&self, text: &'a str) -> Vec<Piece<'a>> {
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < text.len() {
            let rest = &text[i..];
            match self.specials.iter().find(|(s, _)| !s.is_empty() && rest.starts_with(s.as_str())) {
                Some((s, id)) => {
                    if start < i {
                        out.push(Piece::Text(&text[start..i]));
                    }
                    out.push(Piece::Special(*id));
                    i += s.len();
                    start = i;
                }
                None => i += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            out.push(Piece::Text(&text[start..]));
        }
        out
    }

    /// Decodes ids to text, dropping control tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| anyhow!("tokenizer: {e}"))
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, tok: &str) -> Option<u32> {
        self.inner.token_to_id(tok)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// A piece of text split at special tokens ([`Tokenizer::split_special`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Special(u32),
}

/// The added tokens marked special, longest first (ties by id, so the order is fixed).
fn special_tokens(t: &tokenizers::Tokenizer) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = t.get_added_tokens_decoder().into_iter().filter(|(_, a)| a.special && !a.content.is_empty()).map(|(id, a)| (a.content, id)).collect();
    v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    v
}

/// The `tokenizer.json` document for a byte-level BPE described the way GGUF stores it: token
/// strings, llama.cpp token types (3 = control, 4 = user-defined), merges ("a b") and the
/// pre-tokenizer name.
pub fn bpe_tokenizer_json(tokens: &[String], types: &[u64], merges: &[String], pre: &str) -> Result<serde_json::Value> {
    let pre_tokenizer = match pre {
        "qwen2" | "deepseek-r1-qwen" => split_then_bytes(QWEN2_SPLIT),
        "llama3" | "llama-bpe" | "smaug-bpe" => split_then_bytes(LLAMA3_SPLIT),
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}),
        "default" | "gpt2" | "gpt-2" => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
        other => bail!("pre-tokenizer {} is not supported (qwen2, llama-bpe, smollm, default)", crate::gguf::show(other)),
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(id));
        let ty = types.get(id).copied().unwrap_or(1);
        if ty == 3 || ty == 4 {
            added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3}));
        }
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    }))
}

fn split_then_bytes(pattern: &str) -> serde_json::Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})
}

fn string_array(g: &GgufFile, key: &str) -> Result<Vec<String>> {
    match g.meta(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.to_string().cloned().map_err(|_| anyhow!("{}: `{key}` holds a non-string", g.path.display())))
            .collect(),
        Some(_) => bail!("{}: metadata `{key}` is not an array", g.path.display()),
        None => bail!("{}: metadata `{key}` is missing", g.path.display()),
    }
}

/// Incremental detokenizer: turns a growing token list into text deltas without splitting
/// multi-byte characters (a delta is emitted only once it decodes cleanly).
#[derive(Default, Clone)]
pub struct TextStream {
    pub tokens: Vec<u32>,
    prefix_start: usize,
    read_start: usize,
}

impl TextStream {
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.tokens.push(id);
        let prefix = tok.decode(&self.tokens[self.prefix_start..self.read_start])?;
        let text = tok.decode(&self.tokens[self.prefix_start..])?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') && text.is_char_boundary(prefix.len()) {
            let delta = text[prefix.len()..].to_string();
            self.prefix_start = self.read_start;
            self.read_start = self.tokens.len();
            Ok(Some(delta))
        } else {
            Ok(None)
        }
    }
}
