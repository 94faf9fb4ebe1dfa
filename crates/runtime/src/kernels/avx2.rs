//! AVX2 + FMA kernels (the ggml algorithms, written for this layout). Every block product is an
//! exact integer dot product; only the f32 accumulation order differs from the scalar reference.

use super::{f16_at, scale_min_k4, QActs, WType, MAX_GROUP};
use std::arch::x86_64::*;

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const Q5_0: u8 = 3;

/// Dot products of one weight row with `mr` (1..=4) activation rows starting at `m0`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `w` must be one row of `t` with `a.k` columns.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows(t: WType, w: &[u8], a: &QActs, m0: usize, mr: usize, res: &mut [f32; MAX_GROUP]) {
    debug_assert!(m0 + mr <= a.m && w.len() == a.k / t.block() * t.block_bytes());
    match mr {
        1 => rows::<1>(t, w, a, m0, res),
        2 => rows::<2>(t, w, a, m0, res),
        3 => rows::<3>(t, w, a, m0, res),
        _ => rows::<4>(t, w, a, m0, res),
    }
}

#[inline(always)]
unsafe fn rows<const R: usize>(t: WType, w: &[u8], a: &QActs, m0: usize, res: &mut [f32; MAX_GROUP]) {
    match t {
        WType::Q8_0 => blocks32::<R, Q8_0>(w, a, m0, res),
        WType::Q4_0 => blocks32::<R, Q4_0>(w, a, m0, res),
        WType::Q4_1 => blocks32::<R, Q4_1>(w, a, m0, res),
        WType::Q5_0 => blocks32::<R, Q5_0>(w, a, m0, res),
        WType::Q4K => q4k::<R>(w, a, m0, res),
        WType::Q6K => q6k::<R>(w, a, m0, res),
    }
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// 16 bytes of packed nibbles -> 32 bytes: low nibbles first, then high nibbles.
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// 0xFF in byte i where bit i of the 32-bit word at `p` is set.
#[inline(always)]
unsafe fn bits32(p: *const u8) -> __m256i {
    let x32 = std::ptr::read_unaligned(p as *const u32);
    let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Signed x signed bytes -> 8 lanes of i32 pair sums.
#[inline(always)]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

#[inline(always)]
unsafe fn unpack32<const T: u8>(blk: *const u8) -> __m256i {
    match T {
        Q8_0 => _mm256_loadu_si256(blk.add(2) as *const __m256i),
        Q4_0 => _mm256_sub_epi8(nibbles32(blk.add(2)), _mm256_set1_epi8(8)),
        Q4_1 => nibbles32(blk.add(4)),
        _ => {
            // Q5_0: value = nibble + 16 * high_bit - 16, i.e. nibble | 0xF0 when the bit is clear.
            let hi = _mm256_andnot_si256(bits32(blk.add(2)), _mm256_set1_epi8(0xF0u8 as i8));
            _mm256_or_si256(nibbles32(blk.add(6)), hi)
        }
    }
}

#[inline(always)]
unsafe fn blocks32<const R: usize, const T: u8>(w: &[u8], a: &QActs, m0: usize, res: &mut [f32; MAX_GROUP]) {
    let bb = match T {
        Q8_0 => 34,
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 22,
    };
    let k = a.k;
    let nb = k / 32;
    let wp = w.as_ptr();
    let xq = a.qs.as_ptr();
    let mut acc = [_mm256_setzero_ps(); R];
    let mut mins = [0f32; R];
    for b in 0..nb {
        let blk = wp.add(b * bb);
        let wv = unpack32::<T>(blk);
        let dw = f16_at(std::slice::from_raw_parts(blk, 2), 0);
        for r in 0..R {
            let row = m0 + r;
            let xv = _mm256_loadu_si256(xq.add(row * k + b * 32) as *const __m256i);
            let dot = if T == Q4_1 { _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), _mm256_set1_epi16(1)) } else { dot_i8(wv, xv) };
            let scale = _mm256_set1_ps(dw * *a.d.get_unchecked(row * nb + b));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[r]);
            if T == Q4_1 {
                mins[r] += f16_at(std::slice::from_raw_parts(blk.add(2), 2), 0) * *a.s.get_unchecked(row * nb + b);
            }
        }
    }
    for r in 0..R {
        res[r] = hsum_ps(acc[r]) + mins[r];
    }
}

#[inline(always)]
unsafe fn q4k<const R: usize>(w: &[u8], a: &QActs, m0: usize, res: &mut [f32; MAX_GROUP]) {
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr();
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [0f32; R];
    for b in 0..nb {
        let blk = &w[b * 144..(b + 1) * 144];
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let mut sc = [0i16; 8];
        let mut mn = [0i32; 8];
        for s in 0..8 {
            let (x, y) = scale_min_k4(s, &blk[4..16]);
            sc[s] = x as i16;
            mn[s] = y as i32;
        }
        let qs = blk.as_ptr().add(16);
        let mut wv = [_mm256_setzero_si256(); 8];
        for j in 0..4 {
            let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            wv[2 * j] = _mm256_and_si256(q, m4);
            wv[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        for r in 0..R {
            let row = m0 + r;
            let xp = xq.add(row * k + b * 256);
            let mut isum = _mm256_setzero_si256();
            for s in 0..8 {
                let xv = _mm256_loadu_si256(xp.add(32 * s) as *const __m256i);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv[s], xv), _mm256_set1_epi16(sc[s]));
                isum = _mm256_add_epi32(isum, p);
            }
            let bs = a.bsums.as_ptr().add((row * nb + b) * 16);
            let mut msum = 0i32;
            for s in 0..8 {
                msum += mn[s] * (*bs.add(2 * s) as i32 + *bs.add(2 * s + 1) as i32);
            }
            let dx = *a.d.get_unchecked(row * nb + b);
            acc[r] += dx * (d * hsum_epi32(isum) as f32 - dmin * msum as f32);
        }
    }
    res[..R].copy_from_slice(&acc);
}

#[inline(always)]
unsafe fn q6k<const R: usize>(w: &[u8], a: &QActs, m0: usize, res: &mut [f32; MAX_GROUP]) {
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr();
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [0f32; R];
    for b in 0..nb {
        let blk = &w[b * 210..(b + 1) * 210];
        let (ql, qh) = (blk.as_ptr(), blk.as_ptr().add(128));
        let sc: [i8; 16] = std::array::from_fn(|i| blk[192 + i] as i8);
        let d = f16_at(blk, 208);
        // 8 vectors of 32 unsigned 6-bit values, in element order; vector v has the scales of
        // groups 2v (bytes 0..15) and 2v+1 (bytes 16..31).
        let mut qv = [_mm256_setzero_si256(); 8];
        let mut scv = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            let l0 = _mm256_loadu_si256(ql.add(64 * h) as *const __m256i);
            let l1 = _mm256_loadu_si256(ql.add(64 * h + 32) as *const __m256i);
            let hb = _mm256_loadu_si256(qh.add(32 * h) as *const __m256i);
            qv[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0x03)), 4));
            qv[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0x0C)), 2));
            qv[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
            qv[4 * h + 3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                _mm256_srli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0xC0u8 as i8)), 2),
            );
        }
        for v in 0..8 {
            scv[v] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * v + 1] as i16), _mm_set1_epi16(sc[2 * v] as i16));
        }
        for r in 0..R {
            let row = m0 + r;
            let xp = xq.add(row * k + b * 256);
            let mut isum = _mm256_setzero_si256();
            for v in 0..8 {
                let xv = _mm256_loadu_si256(xp.add(32 * v) as *const __m256i);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(qv[v], xv), scv[v]));
            }
            // the stored values are q + 32: subtract 32 * sum_g sc[g] * sum(x in g)
            let bs = a.bsums.as_ptr().add((row * nb + b) * 16);
            let mut corr = 0i32;
            for g in 0..16 {
                corr += sc[g] as i32 * *bs.add(g) as i32;
            }
            let dx = *a.d.get_unchecked(row * nb + b);
            acc[r] += d * dx * (hsum_epi32(isum) - 32 * corr) as f32;
        }
    }
    res[..R].copy_from_slice(&acc);
}
