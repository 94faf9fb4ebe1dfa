//! Element-wise math for the inference path: softmax numerators with their sum
//! (`exp_shifted_sum`), SiLU(gate) * up, max, dot, axpy.
//!
//! Written as plain loops over fixed-width chunks that LLVM turns into SIMD code for the build's
//! baseline (AVX2 + FMA here), with 16-lane AVX-512 versions of the two `exp` users chosen at run
//! time; candle's unary `exp`/`silu` call libm once per element, which made SiLU * up cost 5 ms per
//! batched decode step and sampling's softmax several more.
//!
//! `exp` is Cephes' `expf` (range reduction by ln 2 in two parts, degree-6 polynomial):
//! within 2 ulp of libm over the whole range, 0 below -87.3 (where f32 would go subnormal),
//! infinity above 88.72.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this, e^x is not a normal f32: the result is 0.
const MIN_ARG: f32 = -87.336_54;
const MAX_ARG: f32 = 88.722_83;
/// Lanes per chunk: one AVX-512 register, two AVX2 registers.
const W: usize = 16;

#[inline(always)]
fn exp1(x: f32) -> f32 {
    let xc = x.clamp(MIN_ARG, MAX_ARG);
    let n = (xc * LOG2E + 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5.000_000_1e-1);
    let p = p.mul_add(r * r, r) + 1.0;
    // 2^n without a float-to-int conversion (Rust's saturating `as i32` does not vectorize): the
    // integer n + 127 sits in the low mantissa bits of n + 127 + 2^23; shifting it into the
    // exponent field drops the rest. n = 128 (overflow) is taken as 2^127 * 2.
    let e = (n.min(127.0) + 127.0 + 8_388_608.0).to_bits().wrapping_shl(23);
    let y = p * f32::from_bits(e) * if n > 127.0 { 2.0 } else { 1.0 };
    // NaN propagates through p
    let y = if x < MIN_ARG { 0.0 } else { y };
    if x > MAX_ARG {
        f32::INFINITY
    } else {
        y
    }
}

/// Sum of 16 lanes as a tree (vectorizes to shuffles; a left-to-right sum is 16 dependent adds).
#[inline(always)]
fn hsum(mut a: [f32; W]) -> f32 {
    let mut w = W / 2;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

/// `e^(scale * (x[i] - shift))` in place; returns the sum of the results (16 f64 partial sums,
/// so a total of 150k terms keeps its precision).
pub fn exp_shifted_sum(x: &mut [f32], shift: f32, scale: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512 F (Isa::detect).
        return unsafe { avx512::exp_shifted_sum(x, shift, scale) };
    }
    exp_shifted_sum_portable(x, shift, scale)
}

fn exp_shifted_sum_portable(x: &mut [f32], shift: f32, scale: f32) -> f64 {
    let mut acc = [0f64; W];
    let mut chunks = x.chunks_exact_mut(W);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(acc.iter_mut()) {
            *v = exp1((*v - shift) * scale);
            *a += *v as f64;
        }
    }
    let mut total: f64 = acc.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp1((*v - shift) * scale);
        total += *v as f64;
    }
    total
}

/// Largest element (NEG_INFINITY for an empty slice; NaNs are ignored).
pub fn max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; W];
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        for (a, &v) in m.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m.iter().copied().fold(tail, f32::max)
}

/// `silu(gate[i]) * up[i]` with silu(g) = g / (1 + e^-g).
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512 F (Isa::detect).
        return unsafe { avx512::silu_mul(gate, up) };
    }
    silu_mul_portable(gate, up)
}

fn silu_mul_portable(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let f = |g: f32, u: f32| g / (1.0 + exp1(-g)) * u;
    let mut out = vec![0f32; gate.len()];
    let mut oc = out.chunks_exact_mut(W);
    let mut gc = gate.chunks_exact(W);
    let mut uc = up.chunks_exact(W);
    for ((o, g), u) in (&mut oc).zip(&mut gc).zip(&mut uc) {
        for i in 0..W {
            o[i] = f(g[i], u[i]);
        }
    }
    for ((o, &g), &u) in oc.into_remainder().iter_mut().zip(gc.remainder()).zip(uc.remainder()) {
        *o = f(g, u);
    }
    out
}

/// Dot product of two equal-length slices (16 partial sums).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; W];
    let mut ac = a.chunks_exact(W);
    let mut bc = b.chunks_exact(W);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for i in 0..W {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    hsum(acc) + tail
}

/// `y[i] += a * x[i]`.
#[inline(always)]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (y, &x) in y.iter_mut().zip(x) {
        *y = a.mul_add(x, *y);
    }
}

/// Whether the 512-bit versions run (the kernels' ISA choice, so `DEEPGUARD_KERNELS` caps both).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    super::Isa::detect() == super::Isa::Avx512
}

/// The same functions 16 lanes at a time; `scalef` builds 2^n and handles overflow.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn exp16(x: __m512) -> __m512 {
        let xc = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(MAX_ARG)), _mm512_set1_ps(MIN_ARG));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(xc, _mm512_set1_ps(LOG2E), _mm512_set1_ps(0.5)));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc));
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
        let y = _mm512_scalef_ps(p, n);
        let y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(MIN_ARG)), y);
        let y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(MAX_ARG)), _mm512_set1_ps(f32::INFINITY));
        // NaN in, NaN out
        _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), x)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_shifted_sum(x: &mut [f32], shift: f32, scale: f32) -> f64 {
        let (sh, sc) = (_mm512_set1_ps(shift), _mm512_set1_ps(scale));
        let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            let y = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), sh), sc));
            _mm512_storeu_ps(c.as_mut_ptr(), y);
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(y)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(y)))));
        }
        let mut total = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
        for v in chunks.into_remainder() {
            *v = exp1((*v - shift) * scale);
            total += *v as f64;
        }
        total
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; gate.len()];
        let n16 = gate.len() / 16 * 16;
        let one = _mm512_set1_ps(1.0);
        for i in (0..n16).step_by(16) {
            let g = _mm512_loadu_ps(gate.as_ptr().add(i));
            let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let y = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up.as_ptr().add(i)));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), y);
        }
        for i in n16..gate.len() {
            out[i] = gate[i] / (1.0 + exp1(-gate[i])) * up[i];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_normal_range() {
        let mut xs: Vec<f32> = (0..200_001).map(|i| -87.3 + (88.7 + 87.3) * i as f32 / 200_000.0).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 0.5, 88.72, -87.33]);
        for f in [exp_shifted_sum, exp_shifted_sum_portable] {
            let mut ys = xs.clone();
            f(&mut ys, 0.0, 1.0);
            let worst = xs.iter().zip(&ys).map(|(&x, &y)| ulps(y, x.exp())).max().unwrap();
            assert!(worst <= 2, "worst error {worst} ulp");
        }
    }

    #[test]
    fn exp_edges_underflow_overflow_and_nan() {
        // 16 lanes and a tail: both the SIMD body and the scalar remainder see every case
        let base = [f32::NEG_INFINITY, -1000.0, -88.0, 89.0, f32::INFINITY, f32::NAN, 0.0, 88.7];
        let v: Vec<f32> = base.iter().cycle().take(16 + 8).copied().collect();
        for f in [exp_shifted_sum, exp_shifted_sum_portable] {
            let mut v = v.clone();
            f(&mut v, 0.0, 1.0);
            for c in v.chunks(8) {
                assert_eq!(&c[..3], &[0.0, 0.0, 0.0]);
                assert_eq!(c[3], f32::INFINITY);
                assert_eq!(c[4], f32::INFINITY);
                assert!(c[5].is_nan());
                assert_eq!(c[6], 1.0);
                assert!(ulps(c[7], 88.7f32.exp()) <= 2);
            }
        }
    }

    #[test]
    fn silu_mul_softmax_parts_and_dot_match_plain_formulas() {
        // odd length: chunks and a tail
        let n = 16 * 3 + 5;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 - 26.0) * 0.37).collect();
        let u: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.05).collect();
        let out = silu_mul(&g, &u);
        let portable = silu_mul_portable(&g, &u);
        for i in 0..n {
            assert!((out[i] - portable[i]).abs() <= 1e-6 * portable[i].abs().max(1.0));
            let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
            assert!((out[i] - want).abs() <= 1e-6 * want.abs().max(1.0), "{i}: {} vs {want}", out[i]);
        }
        assert_eq!(max(&g), g[n - 1]);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let mut e = g.clone();
        let s = exp_shifted_sum(&mut e, 3.0, 0.5);
        let want: f64 = g.iter().map(|&x| ((x - 3.0) * 0.5).exp() as f64).sum();
        assert!((s - want).abs() < 1e-5 * want);
        let mut e2 = g.clone();
        let s2 = exp_shifted_sum_portable(&mut e2, 3.0, 0.5);
        assert!((s2 - want).abs() < 1e-5 * want);
        assert!(e.iter().zip(&e2).all(|(a, b)| ulps(*a, *b) <= 2));
        let d = dot(&g, &u);
        let want: f32 = g.iter().zip(&u).map(|(a, b)| a * b).sum();
        assert!((d - want).abs() < 1e-4 * want.abs().max(1.0));
        let mut y = u.clone();
        axpy(2.0, &g, &mut y);
        assert!(y.iter().zip(g.iter().zip(&u)).all(|(y, (g, u))| (y - (2.0 * g + u)).abs() < 1e-5));
    }
}
