//! A small seeded random source (SplitMix64) for everything that must be reproducible bit for
//! bit: parameter initialisation, data order and dropout masks in training, so that a resumed
//! run continues exactly where a killed one stopped. candle's CPU `rand` cannot be seeded.

use anyhow::Result;
use candle_core::{Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A seed derived from this one and `k` (independent streams for named uses).
    pub fn derive(seed: u64, k: u64) -> u64 {
        SplitMix(seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03)).next()
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// U(lo, hi) tensor of `shape` from `seed`.
pub fn uniform(seed: u64, lo: f64, hi: f64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let mut r = SplitMix(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (lo + (hi - lo) * r.uniform()) as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// N(0, std^2) tensor of `shape` from `seed`.
pub fn normal(seed: u64, std: f64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let mut r = SplitMix(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (std * r.normal()) as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Inverted dropout with a mask drawn from `seed`: each element is zeroed with probability `p`
/// and the survivors are scaled by 1 / (1 - p). The same seed gives the same mask.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let mut r = SplitMix(seed);
    let keep = 1.0 / (1.0 - p);
    let m: Vec<f32> = (0..x.elem_count()).map(|_| if (r.uniform() as f32) < p { 0.0 } else { keep }).collect();
    let m = Tensor::from_vec(m, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * m)?)
}
