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

/// The packed layout (`packed.rs`): `out[(m0 + r) * n + col0 + i]` = row i of the 16-row group
/// whose tiles are `tiles`, times activation row `m0 + r`, for `mr` (1..=4) rows. The 16 rows go
/// in two passes of 8, each reading one 256-bit half of every tile vector; byte products with
/// `vpmaddubsw` (codes below 64, so the i16 pair sums cannot saturate; Q8_0 with the sign trick)
/// and `vpmaddwd`. `prefetch` > 0 asks for the tile that many bytes ahead (first pass).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `tiles` must be one group's tiles of a `t` matrix
/// with `a.k` columns, and `out` must hold rows `m0 .. m0 + mr` of width `n >= col0 + 16`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn packed_rows(t: WType, tiles: &[u8], a: &QActs, m0: usize, mr: usize, out: &mut [f32], n: usize, col0: usize, prefetch: usize) {
    debug_assert!(m0 + mr <= a.m && tiles.len() == a.k / t.block() * super::packed::tile_bytes(t));
    debug_assert!(out.len() >= (m0 + mr) * n && col0 + 16 <= n);
    for h in 0..2 {
        let o = out.as_mut_ptr().add(col0 + 8 * h);
        let pf = if h == 0 { prefetch } else { 0 };
        match mr {
            1 => packed_t::<1>(t, tiles, a, m0, o, n, h, pf),
            2 => packed_t::<2>(t, tiles, a, m0, o, n, h, pf),
            3 => packed_t::<3>(t, tiles, a, m0, o, n, h, pf),
            _ => packed_t::<4>(t, tiles, a, m0, o, n, h, pf),
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn packed_t<const R: usize>(t: WType, tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, h: usize, pf: usize) {
    match t {
        WType::Q8_0 => packed32::<R, Q8_0>(tiles, a, m0, o, n, h, pf),
        WType::Q4_0 => packed32::<R, Q4_0>(tiles, a, m0, o, n, h, pf),
        WType::Q4_1 => packed32::<R, Q4_1>(tiles, a, m0, o, n, h, pf),
        WType::Q5_0 => packed32::<R, Q5_0>(tiles, a, m0, o, n, h, pf),
        WType::Q4K => packed_q4k::<R>(tiles, a, m0, o, n, h, pf),
        WType::Q6K => packed_q6k::<R>(tiles, a, m0, o, n, h, pf),
    }
}

/// Four activation bytes (column quad `j`) in every lane.
#[inline(always)]
unsafe fn quad(xb: *const i32, j: usize) -> __m256i {
    _mm256_set1_epi32(std::ptr::read_unaligned(xb.add(j)))
}

/// Sum over 4 column quads of u * x, per row (8 i32 lanes), for codes u < 32: each i16 pair sum
/// is below 2 * 31 * 128, so four of them still fit in i16.
#[inline(always)]
unsafe fn dot4_small(u: &[__m256i], xb: *const i32) -> __m256i {
    let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(u[0], quad(xb, 0)), _mm256_maddubs_epi16(u[1], quad(xb, 1)));
    let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(u[2], quad(xb, 2)), _mm256_maddubs_epi16(u[3], quad(xb, 3)));
    _mm256_madd_epi16(_mm256_add_epi16(s01, s23), _mm256_set1_epi16(1))
}

/// 32 bits -> 32 bytes, 0xFF where the bit is set (bit k -> byte k).
#[inline(always)]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let shuf = _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
}

/// 8 f16 values at `p` as f32.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[inline(always)]
unsafe fn packed32<const R: usize, const T: u8>(tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, h: usize, pf: usize) {
    let (tb, off) = match T {
        Q8_0 => (544, 0),
        Q4_0 => (288, 8),
        Q4_1 => (320, 0),
        _ => (352, 16),
    };
    let k = a.k;
    let nb = k / 32;
    let xq = a.qs.as_ptr();
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let p = tiles.as_ptr().add(b * tb);
        super::prefetch_ahead(p, tb, pf);
        let dw = f16x8(p.add(16 * h));
        let mut wv = [_mm256_setzero_si256(); 8];
        if T == Q8_0 {
            // signed weights (the stored codes are w + 128)
            for j in 0..8 {
                wv[j] = _mm256_xor_si256(_mm256_loadu_si256(p.add(32 + 64 * j + 32 * h) as *const __m256i), _mm256_set1_epi8(-128));
            }
        } else {
            let nib = p.add(match T {
                Q4_0 => 32,
                Q4_1 => 64,
                _ => 96,
            } + 32 * h);
            for j in 0..4 {
                let v = _mm256_loadu_si256(nib.add(64 * j) as *const __m256i);
                wv[j] = _mm256_and_si256(v, m4);
                wv[j + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            if T == Q5_0 {
                for j in 0..8 {
                    let bits = std::ptr::read_unaligned(p.add(32 + 8 * j + 4 * h) as *const u32);
                    wv[j] = _mm256_or_si256(wv[j], _mm256_and_si256(bytes_from_bits(bits), _mm256_set1_epi8(16)));
                }
            }
        }
        let mw = if T == Q4_1 { f16x8(p.add(32 + 16 * h)) } else { dw };
        for r in 0..R {
            let row = m0 + r;
            let xb = xq.add(row * k + b * 32) as *const i32;
            let e = row * nb + b;
            let isum = if T == Q8_0 {
                let mut s = _mm256_setzero_si256();
                for j in 0..8 {
                    let x = quad(xb, j);
                    let pr = _mm256_maddubs_epi16(_mm256_abs_epi8(wv[j]), _mm256_sign_epi8(x, wv[j]));
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(pr, ones));
                }
                s
            } else {
                let s = _mm256_add_epi32(dot4_small(&wv[0..4], xb), dot4_small(&wv[4..8], xb.add(4)));
                if off != 0 { _mm256_sub_epi32(s, _mm256_set1_epi32(off * *a.sums.get_unchecked(e))) } else { s }
            };
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*a.d.get_unchecked(e)));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
            if T == Q4_1 {
                acc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*a.s.get_unchecked(e)), acc[r]);
            }
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(o.add((m0 + r) * n), acc[r]);
    }
}

/// 8 bytes at `p` (one per row) as i16 pairs (v, v) in 8 lanes, zero- or sign-extended, for
/// `vpmaddwd`: one broadcast load and one in-lane shuffle (signed: the byte into the high half
/// of each i16, then an arithmetic shift).
#[inline(always)]
unsafe fn dup8_epi16<const SIGNED: bool>(p: *const u8) -> __m256i {
    // both 128-bit lanes hold the 8 bytes (twice), so 32-bit lane i can take byte i
    let b = _mm256_set1_epi64x(std::ptr::read_unaligned(p as *const i64));
    const fn idx(signed: bool) -> [u32; 8] {
        let mut v = [0u32; 8];
        let mut i = 0;
        while i < 8 {
            let j = i as u32;
            v[i] = if signed { 0x0080_0080 | j << 8 | j << 24 } else { 0x8000_8000 | j | j << 16 };
            i += 1;
        }
        v
    }
    const UNSIGNED: [u32; 8] = idx(false);
    const SIGNED_IDX: [u32; 8] = idx(true);
    if SIGNED {
        _mm256_srai_epi16(_mm256_shuffle_epi8(b, _mm256_loadu_si256(SIGNED_IDX.as_ptr() as *const __m256i)), 8)
    } else {
        _mm256_shuffle_epi8(b, _mm256_loadu_si256(UNSIGNED.as_ptr() as *const __m256i))
    }
}

/// Sign-extended i16 pairs (a_i, b_i) in 8 lanes from 8 signed bytes a at `p` and 8 more b at
/// `p + 16` (one per row each).
#[inline(always)]
unsafe fn pair8_epi16(p: *const u8) -> __m256i {
    let (a, b) = (_mm_loadl_epi64(p as *const __m128i), _mm_loadl_epi64(p.add(16) as *const __m128i));
    _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b))
}

/// Q4_K tiles, 8 rows (half `h` of the 16): per super-block and row lane,
/// `d * sum_s sc_s * sum(q * x) - dmin * sum_s min_s * sum(x)`, times the activation scale. The
/// byte products of a sub-block are summed in i16 (codes below 16: at most 8 * 2 * 15 * 128) and
/// one `vpmaddwd` applies the row's scale, so a super-block stays in integers until one
/// int-to-float and FMA per row. The min term is one `vpmaddwd` per sub-block (the row's min in
/// both i16 halves against the two 16-value sums of x).
#[inline(always)]
unsafe fn packed_q4k<const R: usize>(tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, h: usize, pf: usize) {
    const TB: usize = 2368;
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr() as *const i32;
    let bsums = a.bsums.as_ptr() as *const u8;
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let p = tiles.as_ptr().add(b * TB);
        super::prefetch_ahead(p, TB, pf);
        let dw = f16x8(p.add(16 * h));
        let dmw = f16x8(p.add(32 + 16 * h));
        let mut mins = [_mm256_setzero_si256(); 8];
        for (s, v) in mins.iter_mut().enumerate() {
            *v = dup8_epi16::<false>(p.add(192 + 16 * s + 8 * h));
        }
        for r in 0..R {
            let bs = bsums.add(((m0 + r) * nb + b) * 32);
            let mut msum = _mm256_setzero_si256();
            for (s, v) in mins.iter().enumerate() {
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*v, _mm256_set1_epi32(std::ptr::read_unaligned(bs.add(4 * s) as *const i32))));
            }
            let dx = _mm256_set1_ps(*a.d.get_unchecked((m0 + r) * nb + b));
            acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmw, dx), acc[r]);
        }
        let mut isum = [_mm256_setzero_si256(); R];
        for s in 0..8 {
            let sv = dup8_epi16::<false>(p.add(64 + 16 * s + 8 * h));
            let q = p.add(320 + 512 * (s / 2) + 32 * h);
            let mut wv = [_mm256_setzero_si256(); 8];
            for j in 0..8 {
                let v = _mm256_loadu_si256(q.add(64 * j) as *const __m256i);
                wv[j] = _mm256_and_si256(if s % 2 == 0 { v } else { _mm256_srli_epi16(v, 4) }, m4);
            }
            for r in 0..R {
                let xb = xq.add(((m0 + r) * k + b * 256 + 32 * s) / 4);
                let mut s16 = _mm256_maddubs_epi16(wv[0], quad(xb, 0));
                for j in 1..8 {
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wv[j], quad(xb, j)));
                }
                isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(s16, sv));
            }
        }
        for r in 0..R {
            let dx = _mm256_set1_ps(*a.d.get_unchecked((m0 + r) * nb + b));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(dw, dx), acc[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(o.add((m0 + r) * n), acc[r]);
    }
}

/// Q6_K tiles, 8 rows: `d * sum_g sc_g * (sum(q * x) - 32 * sum(x))` over the 16-column groups g.
/// Byte products in i16 (codes below 64: two quads per i16 sum), the group's scale applied by
/// `vpmaddwd`, all in integers until one int-to-float and FMA per super-block and row; the offset
/// term is one `vpmaddwd` per pair of groups (the row's two scales against two sums of x).
#[inline(always)]
unsafe fn packed_q6k<const R: usize>(tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, h: usize, pf: usize) {
    const TB: usize = 3360;
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr() as *const i32;
    let bsums = a.bsums.as_ptr() as *const u8;
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let p = tiles.as_ptr().add(b * TB);
        super::prefetch_ahead(p, TB, pf);
        let dw = f16x8(p.add(16 * h));
        let mut isum = [_mm256_setzero_si256(); R];
        {
            let mut scp = [_mm256_setzero_si256(); 8];
            for (hh, v) in scp.iter_mut().enumerate() {
                *v = pair8_epi16(p.add(32 + 32 * hh + 8 * h));
            }
            for r in 0..R {
                let bs = bsums.add(((m0 + r) * nb + b) * 32);
                let mut corr = _mm256_setzero_si256();
                for (hh, v) in scp.iter().enumerate() {
                    corr = _mm256_add_epi32(corr, _mm256_madd_epi16(*v, _mm256_set1_epi32(std::ptr::read_unaligned(bs.add(4 * hh) as *const i32))));
                }
                isum[r] = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(corr, 5));
            }
        }
        for g in 0..16 {
            let (p4, gg) = (g / 4, g % 4);
            let sv = dup8_epi16::<true>(p.add(32 + 16 * g + 8 * h));
            let mut wv = [_mm256_setzero_si256(); 4];
            for hh in 0..4 {
                let c4 = 4 * gg + hh;
                let l = _mm256_loadu_si256(p.add(288 + 64 * (8 * p4 + c4 % 8) + 32 * h) as *const __m256i);
                let lo = _mm256_and_si256(if c4 < 8 { l } else { _mm256_srli_epi16(l, 4) }, m4);
                let hb = _mm256_loadu_si256(p.add(2336 + 64 * (4 * p4 + hh) + 32 * h) as *const __m256i);
                // bits 2gg..2gg+2 of each byte to bits 4..6
                let hb = match gg {
                    0 => _mm256_slli_epi16(hb, 4),
                    1 => _mm256_slli_epi16(hb, 2),
                    2 => hb,
                    _ => _mm256_srli_epi16(hb, 2),
                };
                wv[hh] = _mm256_or_si256(lo, _mm256_and_si256(hb, m30));
            }
            for r in 0..R {
                let xb = xq.add(((m0 + r) * k + b * 256 + 16 * g) / 4);
                let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(wv[0], quad(xb, 0)), _mm256_maddubs_epi16(wv[1], quad(xb, 1)));
                let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(wv[2], quad(xb, 2)), _mm256_maddubs_epi16(wv[3], quad(xb, 3)));
                isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(_mm256_madd_epi16(s01, sv), _mm256_madd_epi16(s23, sv)));
            }
        }
        for r in 0..R {
            let dx = _mm256_set1_ps(*a.d.get_unchecked((m0 + r) * nb + b));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(dw, dx), acc[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(o.add((m0 + r) * n), acc[r]);
    }
}
