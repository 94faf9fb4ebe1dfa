//! Activation quantization, bit-for-bit as ggml (and candle) do it.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// Blocks of 32: f16 scale (max|x| / 127), i8 values.
    Q8_0,
    /// Q8_0 plus `s = f16(sum q) * d` per block (for weights with a min offset).
    Q8_1,
    /// Blocks of 256: f32 scale (-max / 127 with the sign of the largest value), i8 values, and
    /// sums of each 16 values.
    Q8K,
}

impl ActKind {
    pub fn block(self) -> usize {
        match self {
            ActKind::Q8K => 256,
            _ => 32,
        }
    }
}

/// `m` rows of `k` quantized activations.
pub struct QActs {
    pub kind: ActKind,
    pub m: usize,
    pub k: usize,
    /// m * k values.
    pub qs: Vec<i8>,
    /// One scale per block: m * (k / block).
    pub d: Vec<f32>,
    /// Q8_1: d * sum per block.
    pub s: Vec<f32>,
    /// Q8K: sums of 16 values: m * (k / 16).
    pub bsums: Vec<i16>,
}

impl QActs {
    pub fn quantize(kind: ActKind, x: &[f32], m: usize, k: usize) -> QActs {
        let bs = kind.block();
        assert!(k % bs == 0, "{k} not a multiple of {bs}");
        let nb = m * k / bs;
        let mut a = QActs { kind, m, k, qs: vec![0; m * k], d: vec![0.0; nb], s: vec![], bsums: vec![] };
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                if kind == ActKind::Q8_1 {
                    a.s = vec![0.0; nb];
                }
                for b in 0..nb {
                    let xs = &x[b * 32..(b + 1) * 32];
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let d16 = f16::from_f32(d);
                    a.d[b] = d16.to_f32();
                    let mut sum = 0i32;
                    for (q, &v) in a.qs[b * 32..(b + 1) * 32].iter_mut().zip(xs) {
                        *q = (v * id).round() as i8;
                        sum += *q as i32;
                    }
                    if kind == ActKind::Q8_1 {
                        a.s[b] = (f16::from_f32(sum as f32) * d16).to_f32();
                    }
                }
            }
            ActKind::Q8K => {
                a.bsums = vec![0; m * k / 16];
                for b in 0..nb {
                    let xs = &x[b * 256..(b + 1) * 256];
                    let (mut max, mut amax) = (0f32, 0f32);
                    for &v in xs {
                        if amax < v.abs() {
                            amax = v.abs();
                            max = v;
                        }
                    }
                    let qs = &mut a.qs[b * 256..(b + 1) * 256];
                    if amax == 0.0 {
                        a.d[b] = 0.0;
                        continue;
                    }
                    let iscale = -127f32 / max;
                    for (q, &v) in qs.iter_mut().zip(xs) {
                        *q = (iscale * v).round().clamp(-128.0, 127.0) as i8;
                    }
                    for j in 0..16 {
                        a.bsums[b * 16 + j] = qs[j * 16..(j + 1) * 16].iter().map(|&q| q as i32).sum::<i32>() as i16;
                    }
                    a.d[b] = 1.0 / iscale;
                }
            }
        }
        a
    }

    /// Dequantized row `r` (for reference computations in tests).
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let bs = self.kind.block();
        (0..self.k).map(|i| self.qs[r * self.k + i] as f32 * self.d[(r * self.k + i) / bs]).collect()
    }
}
