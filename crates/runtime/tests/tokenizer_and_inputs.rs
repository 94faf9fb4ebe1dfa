//! Tokenizer rebuilt from GGUF metadata, chat templates, and clear errors on bad model files.

mod common;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::*;
use deepguard_runtime::chat::{self, Message};
use deepguard_runtime::testing::{vocab_id, TinySpec};
use deepguard_runtime::Model;

#[test]
fn tokenizer_roundtrips_and_keeps_special_tokens_whole() {
    for spec in [TinySpec::qwen2(), TinySpec::llama()] {
        let (_d, m) = load(&spec);
        let t = &m.tokenizer;
        for s in ["def f(self, x):\n    return x + 1\n", "naïve 🦀 façade\t\r\n  end", "SELECT * FROM t WHERE id = 12345"] {
            assert_eq!(t.decode(&t.encode(s).unwrap()).unwrap(), s);
        }
        // merges apply: "def" is one token, "    " (four spaces after a newline) too
        let ids = t.encode("def").unwrap();
        assert_eq!(ids, vec![vocab_id("def") as u32]);
        let ids = t.encode("<|im_start|>user\nhi<|im_end|>").unwrap();
        assert_eq!(ids[0], vocab_id("<|im_start|>") as u32);
        assert_eq!(*ids.last().unwrap(), vocab_id("<|im_end|>") as u32);
        // control tokens are dropped on decode and end generation
        assert_eq!(t.decode(&ids).unwrap(), "user\nhi");
        assert!(t.stop_ids.contains(&(vocab_id("<|im_end|>") as u32)));
        assert!(t.stop_ids.contains(&(vocab_id("<|endoftext|>") as u32)));
    }
}

#[test]
fn qwen2_pretokenizer_splits_digits_singly() {
    let (_d, m) = load(&TinySpec::qwen2());
    // 3 digits -> 3 byte tokens (no merges for digits), regardless of grouping
    let ids = m.tokenizer.encode("123").unwrap();
    assert_eq!(ids.len(), 3);
}

#[test]
fn chat_template_renders_from_the_model() {
    let (_d, m) = load(&TinySpec::qwen2());
    let msgs = [Message::new("system", "Be safe."), Message::new("user", "Write f.")];
    let s = chat::render(m.tokenizer.chat_template.as_deref(), &msgs, "", "").unwrap();
    assert_eq!(s, "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nWrite f.<|im_end|>\n<|im_start|>assistant\n");
    // ChatML fallback gives the same text for this template
    assert_eq!(chat::render(None, &msgs, "", "").unwrap(), s);
    assert!(chat::render(Some("{% if %}"), &msgs, "", "").unwrap_err().to_string().contains("does not parse"));
}

#[test]
fn truncated_gguf_is_refused_naming_the_file() {
    let (_d, path) = tiny_gguf(&TinySpec::llama());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = format!("{:#}", Model::load(&path, &Device::Cpu).err().expect("must fail"));
    assert!(err.contains(path.to_str().unwrap()) && err.contains("truncated"), "{err}");
}

#[test]
fn non_gguf_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    std::fs::write(&p, b"PK\x03\x04 this is a zip, not a model").unwrap();
    let err = format!("{:#}", Model::load(&p, &Device::Cpu).err().unwrap());
    assert!(err.contains("not a GGUF file") && err.contains("x.gguf"), "{err}");
    std::fs::write(&p, b"GG").unwrap();
    let err = format!("{:#}", Model::load(&p, &Device::Cpu).err().unwrap());
    assert!(err.contains("too short"), "{err}");
    let err = format!("{:#}", Model::load(&dir.path().join("nope.gguf"), &Device::Cpu).err().unwrap());
    assert!(err.contains("does not exist"), "{err}");
    // a folder without config.json
    let err = format!("{:#}", Model::load(dir.path(), &Device::Cpu).err().unwrap());
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("falcon.gguf");
    let t = QTensor::quantize(&Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap();
    let arch = Value::String("falcon".into());
    gguf_file::write(&mut std::fs::File::create(&p).unwrap(), &[("general.architecture", &arch)], &[("token_embd.weight", &t)]).unwrap();
    let err = format!("{:#}", Model::load(&p, &Device::Cpu).err().unwrap());
    assert!(err.contains("unsupported architecture `falcon`") && err.contains("falcon.gguf"), "{err}");
}

#[test]
fn missing_known_model_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("DEEPGUARD_MODELS", dir.path());
    let err = deepguard_runtime::models::resolve("smollm2-135m").unwrap_err().to_string();
    assert!(err.contains("not installed") && err.contains("fetch_models.py smollm2-135m"), "{err}");
    std::fs::write(dir.path().join("smollm2-135m-instruct-q4_1.gguf"), b"partial").unwrap();
    let err = deepguard_runtime::models::resolve("smollm2-135m").unwrap_err().to_string();
    assert!(err.contains("incomplete or corrupt") && err.contains("7 bytes"), "{err}");
    let err = deepguard_runtime::models::resolve("gpt-5").unwrap_err().to_string();
    assert!(err.contains("qwen2.5-coder-0.5b"), "{err}");
}
