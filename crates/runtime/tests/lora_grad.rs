//! LoRA adapters: off = base model, fresh adapters = no-op, and gradients reach every adapter
//! tensor through the whole network (checked against finite differences).

mod common;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor, Var};
use common::*;
use deepguard_runtime::decoder::{ForwardOpts, LogitsSelect};
use deepguard_runtime::lora::{LoraConfig, Proj};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;

fn loss(m: &Model, opts: &ForwardOpts) -> Tensor {
    let inp = &PROMPT[..PROMPT.len() - 1];
    let tgt = Tensor::new(&PROMPT[1..], &Device::Cpu).unwrap();
    let logits = m.decoder.forward(&ids(inp), 0, None, opts).unwrap().logits.unwrap().squeeze(0).unwrap();
    candle_nn::loss::cross_entropy(&logits, &tgt).unwrap()
}

fn cfg() -> LoraConfig {
    LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: Proj::ALL.to_vec(), layers: vec![1, 2], seed: 7 }
}

#[test]
fn adapters_off_and_fresh_adapters_leave_the_model_unchanged() {
    let (_d, mut m) = load(&TinySpec::qwen2());
    let base = ForwardOpts { logits: LogitsSelect::All, ..ForwardOpts::inference() };
    let before = m.decoder.forward(&ids(PROMPT), 0, None, &base).unwrap().logits.unwrap();
    let params = m.decoder.attach_lora(&cfg()).unwrap();
    assert_eq!(params.len(), 2 * 7 * 2, "A and B for 7 projections in 2 layers");
    assert!(params[0].0.starts_with("base_model.model.model.layers.1.self_attn.q_proj.lora_A"));
    let fresh = m.decoder.forward(&ids(PROMPT), 0, None, &base).unwrap().logits.unwrap();
    assert!(max_abs_diff(&before, &fresh) < 1e-6, "B = 0 at init: adapters are a no-op");
    for (n, v) in &params {
        if n.contains("lora_B") {
            v.set(&Tensor::randn(0f32, 0.3, v.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    let on = m.decoder.forward(&ids(PROMPT), 0, None, &base).unwrap().logits.unwrap();
    assert!(max_abs_diff(&before, &on) > 1e-3, "trained adapters change the output");
    let off = m.decoder.forward(&ids(PROMPT), 0, None, &ForwardOpts { lora: false, ..base.clone() }).unwrap().logits.unwrap();
    assert!(max_abs_diff(&before, &off) < 1e-6, "adapters switched off give the frozen reference");
}

#[test]
fn gradients_reach_every_adapter_tensor() {
    // Q8_0 weights: prepare_for_training must dequantize the blocks gradients cross.
    let (_d, mut m) = load(&TinySpec { dtype: GgmlDType::Q8_0, ..TinySpec::llama() });
    let params = m.decoder.attach_lora(&cfg()).unwrap();
    m.decoder.prepare_for_training(1).unwrap();
    for (n, v) in &params {
        if n.contains("lora_B") {
            v.set(&Tensor::randn(0f32, 0.3, v.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    let opts = ForwardOpts { logits: LogitsSelect::All, grad: true, ..ForwardOpts::inference() };
    let l = loss(&m, &opts);
    let grads = l.backward().unwrap();
    for (name, var) in &params {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let n = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        assert!(n.is_finite() && n > 1e-8, "{name}: gradient norm {n}");
    }
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let (_d, mut m) = load(&TinySpec { dtype: GgmlDType::F32, ..TinySpec::qwen2() });
    let params = m.decoder.attach_lora(&cfg()).unwrap();
    m.decoder.prepare_for_training(0).unwrap();
    for (n, v) in &params {
        if n.contains("lora_B") {
            v.set(&Tensor::randn(0f32, 0.3, v.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    let opts = ForwardOpts { logits: LogitsSelect::All, grad: true, ..ForwardOpts::inference() };
    let grads = loss(&m, &opts).backward().unwrap();
    let eps = 1e-2f32;
    let mut checked = 0;
    // one A and one B in the lowest adapted layer (gradient crosses two blocks) and the top one
    for name in ["layers.1.self_attn.q_proj.lora_A", "layers.1.mlp.down_proj.lora_B", "layers.2.self_attn.v_proj.lora_B", "layers.2.mlp.gate_proj.lora_A"] {
        let (_, var) = params.iter().find(|(n, _)| n.contains(name)).unwrap();
        let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let orig = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let idx = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        let eval = |delta: f32, var: &Var| -> f32 {
            let mut w = orig.clone();
            w[idx] += delta;
            var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap()).unwrap();
            loss(&m, &opts).to_scalar::<f32>().unwrap()
        };
        let fd = (eval(eps, var) - eval(-eps, var)) / (2.0 * eps);
        var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
        let rel = (fd - g[idx]).abs() / g[idx].abs().max(1e-6);
        assert!(rel < 0.05, "{name}[{idx}]: analytic {} vs finite difference {fd}", g[idx]);
        checked += 1;
    }
    assert_eq!(checked, 4);
}
