//! Activation quantization, bit-for-bit as ggml (and candle) do it.

use super::SendPtr;
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
    /// Q8_0 / Q8_1: the integer sum of each block's values, m * (k / 32) (the packed kernels
    /// subtract the weights' offset times it).
    pub sums: Vec<i32>,
    /// Q8K: sums of 16 values: m * (k / 16).
    pub bsums: Vec<i16>,
    /// Q8_0 / Q8_1, for 512-bit kernels: per row, per pair of blocks (b, b+1), 16 lanes holding
    /// `d` of block b in 0..8 and of b+1 in 8..16 (0 past the last block): m * pairs * 16.
    pub d16: Vec<f32>,
    /// Q8_1: the same expansion of `s`.
    pub s16: Vec<f32>,
}

impl QActs {
    pub fn quantize(kind: ActKind, x: &[f32], m: usize, k: usize) -> QActs {
        let bs = kind.block();
        assert!(k % bs == 0, "{k} not a multiple of {bs}");
        assert_eq!(x.len(), m * k);
        let nb = k / bs;
        let mut a = QActs {
            kind,
            m,
            k,
            qs: vec![0; m * k],
            d: vec![0.0; m * nb],
            s: if kind == ActKind::Q8_1 { vec![0.0; m * nb] } else { vec![] },
            sums: if kind == ActKind::Q8K { vec![] } else { vec![0; m * nb] },
            bsums: if kind == ActKind::Q8K { vec![0; m * k / 16] } else { vec![] },
            d16: vec![],
            s16: vec![],
        };
        let (qs, d, s, bsums) = (SendPtr(a.qs.as_mut_ptr()), SendPtr(a.d.as_mut_ptr()), SendPtr(a.s.as_mut_ptr()), SendPtr(a.bsums.as_mut_ptr()));
        let sums = SendPtr(a.sums.as_mut_ptr());
        // SAFETY: row r owns qs[r*k..], d[r*nb..], s[r*nb..], sums[r*nb..], bsums[r*k/16..] of the
        // buffers above.
        let rows = |lo: usize, hi: usize| unsafe {
            for r in lo..hi {
                quantize_row(
                    kind,
                    &x[r * k..(r + 1) * k],
                    std::slice::from_raw_parts_mut(qs.get().add(r * k), k),
                    std::slice::from_raw_parts_mut(d.get().add(r * nb), nb),
                    if kind == ActKind::Q8_1 { std::slice::from_raw_parts_mut(s.get().add(r * nb), nb) } else { &mut [] },
                    if kind != ActKind::Q8K { std::slice::from_raw_parts_mut(sums.get().add(r * nb), nb) } else { &mut [] },
                    if kind == ActKind::Q8K { std::slice::from_raw_parts_mut(bsums.get().add(r * k / 16), k / 16) } else { &mut [] },
                );
            }
        };
        // prefill-sized inputs are split over the thread pool by rows
        let pool = super::pool::global();
        let threads = pool.threads();
        if m >= 2 * threads && m * k >= 1 << 15 {
            // a few chunks per thread, taken from a counter (a thread may not take part at all)
            let per = m.div_ceil(threads * 4);
            let next = std::sync::atomic::AtomicUsize::new(0);
            pool.run(|| loop {
                let lo = next.fetch_add(per, std::sync::atomic::Ordering::Relaxed);
                if lo >= m {
                    return;
                }
                rows(lo, (lo + per).min(m));
            });
        } else {
            rows(0, m);
        }
        if kind != ActKind::Q8K {
            a.d16 = expand_pairs(&a.d, m, nb);
            a.s16 = expand_pairs(&a.s, m, nb);
        }
        a
    }

    /// Block pairs per row in `d16` / `s16`.
    pub fn pairs(&self) -> usize {
        (self.k / self.kind.block()).div_ceil(2)
    }

    /// Dequantized row `r` (for reference computations in tests).
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let bs = self.kind.block();
        (0..self.k).map(|i| self.qs[r * self.k + i] as f32 * self.d[(r * self.k + i) / bs]).collect()
    }
}

/// Per row of `nb` values: each pair (v[b], v[b+1]) as 8 copies of each (0 past the end).
fn expand_pairs(v: &[f32], m: usize, nb: usize) -> Vec<f32> {
    if v.is_empty() {
        return vec![];
    }
    let pairs = nb.div_ceil(2);
    let mut out = vec![0f32; m * pairs * 16];
    for r in 0..m {
        for b in 0..nb {
            let o = (r * pairs + b / 2) * 16 + (b % 2) * 8;
            out[o..o + 8].fill(v[r * nb + b]);
        }
    }
    out
}

/// One row: `qs` (k), `d` (one per block), `s` (Q8_1: one per block), `sums` (Q8_0 / Q8_1: one
/// per block), `bsums` (Q8K: k / 16).
fn quantize_row(kind: ActKind, x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sums: &mut [i32], bsums: &mut [i16]) {
    match kind {
        ActKind::Q8_0 | ActKind::Q8_1 => {
            for (b, (xs, qs)) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)).enumerate() {
                let amax = abs_max(xs);
                let db = amax / 127.0;
                let id = if db != 0.0 { 1.0 / db } else { 0.0 };
                let d16 = f16::from_f32(db);
                d[b] = d16.to_f32();
                scale_round(xs, id, qs);
                let sum: i32 = qs.iter().map(|&q| q as i32).sum();
                sums[b] = sum;
                if kind == ActKind::Q8_1 {
                    s[b] = (f16::from_f32(sum as f32) * d16).to_f32();
                }
            }
        }
        ActKind::Q8K => {
            for (b, (xs, qs)) in x.chunks_exact(256).zip(qs.chunks_exact_mut(256)).enumerate() {
                // the signed value of the first element of largest magnitude
                let amax = abs_max(xs);
                let max = xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
                if amax == 0.0 || max == 0.0 {
                    d[b] = 0.0;
                    qs.fill(0);
                    bsums[b * 16..(b + 1) * 16].fill(0);
                    continue;
                }
                let iscale = -127f32 / max;
                scale_round(xs, iscale, qs);
                for j in 0..16 {
                    bsums[b * 16 + j] = qs[j * 16..(j + 1) * 16].iter().map(|&q| q as i32).sum::<i32>() as i16;
                }
                d[b] = 1.0 / iscale;
            }
        }
    }
}

/// max |x| (0 for an empty or all-zero slice).
fn abs_max(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if xs.len() % 8 == 0 && super::Isa::detect() >= super::Isa::Avx2 {
        // SAFETY: AVX2 is present (Isa::detect).
        return unsafe { abs_max_avx2(xs) };
    }
    xs.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// q[i] = round(x[i] * scale) (halves away from zero, like `f32::round`), saturated to i8.
fn scale_round(xs: &[f32], scale: f32, qs: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if xs.len() % 8 == 0 && super::Isa::detect() >= super::Isa::Avx2 {
        // SAFETY: AVX2 is present (Isa::detect).
        return unsafe { scale_round_avx2(xs, scale, qs) };
    }
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = (v * scale).round().clamp(-128.0, 127.0) as i8;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn abs_max_avx2(xs: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut m = _mm256_setzero_ps();
    for c in xs.chunks_exact(8) {
        m = _mm256_max_ps(m, _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_loadu_ps(c.as_ptr())));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_round_avx2(xs: &[f32], scale: f32, qs: &mut [i8]) {
    use std::arch::x86_64::*;
    let sc = _mm256_set1_ps(scale);
    let neg0 = _mm256_set1_ps(-0.0);
    for (c, q) in xs.chunks_exact(8).zip(qs.chunks_exact_mut(8)) {
        let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), sc);
        // trunc, then one step away from zero when the dropped fraction is at least 1/2
        let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let away = _mm256_cmp_ps(_mm256_andnot_ps(neg0, _mm256_sub_ps(v, t)), _mm256_set1_ps(0.5), _CMP_GE_OQ);
        let step = _mm256_and_ps(away, _mm256_or_ps(_mm256_and_ps(v, neg0), _mm256_set1_ps(1.0)));
        let r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(t, step), _mm256_set1_ps(-128.0)), _mm256_set1_ps(127.0));
        let i = _mm256_cvtps_epi32(r);
        let p16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        _mm_storel_epi64(q.as_mut_ptr() as *mut __m128i, _mm_packs_epi16(p16, p16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_rounding_and_abs_max_equal_scalar() {
        let mut st = 7u64;
        let mut xs: Vec<f32> = (0..4096)
            .map(|_| {
                st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((st >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 300.0
            })
            .collect();
        // exact halves, both signs, and values past the i8 range
        for (i, v) in [0.5f32, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -127.5, 127.49, -128.5, 1e9, -1e9, 0.0, -0.0, 0.49999997, -0.49999997].iter().enumerate() {
            xs[i * 3] = *v;
        }
        for scale in [1.0f32, 0.37, -1.0, 1.7] {
            let mut a = vec![0i8; xs.len()];
            scale_round(&xs, scale, &mut a);
            let b: Vec<i8> = xs.iter().map(|&v| (v * scale).round().clamp(-128.0, 127.0) as i8).collect();
            assert_eq!(a, b, "scale {scale}");
        }
        for c in xs.chunks(32) {
            assert_eq!(abs_max(c), c.iter().fold(0f32, |m, v| m.max(v.abs())));
        }
    }
}
