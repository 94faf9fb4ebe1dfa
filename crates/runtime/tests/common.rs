#![allow(dead_code)]
use candle_core::{Device, Tensor};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use std::path::PathBuf;

pub fn tiny_gguf(spec: &TinySpec) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    spec.write_gguf(&p).unwrap();
    (dir, p)
}

pub fn load(spec: &TinySpec) -> (tempfile::TempDir, Model) {
    let (d, p) = tiny_gguf(spec);
    let m = Model::load(&p, &Device::Cpu).unwrap();
    (d, m)
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

pub const PROMPT: &[u32] = &[5, 17, 200, 33, 64, 101, 7, 250, 12, 99, 3];
