//! AVX-512 kernels (F, BW, VL and VNNI: Ice Lake, Sapphire Rapids, Zen 4 and later). Same block
//! algorithms as `avx2.rs`, on 64 bytes at a time, with `vpdpbusd` (u8 x i8 -> i32, four products
//! per lane in one instruction) for 32-blocks and `vpdpwssd` (i16 x i16 -> i32) to apply the
//! K-quant sub-block scales. Every block product is still an exact integer dot product; only the
//! f32 accumulation order differs from the scalar reference.
//!
//! 32-blocks are taken two at a time: weight bytes in element order [block b | block b+1] against
//! the 64 contiguous activation bytes of the same two blocks; a 16-lane scale vector holds
//! `d_w * d_x` of block b in lanes 0..8 and of block b+1 in lanes 8..16. An odd last block runs
//! with the upper activation half zeroed.

use super::{f16_at, scale_min_k4, QActs, WType, MAX_GROUP};
use std::arch::x86_64::*;

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const Q5_0: u8 = 3;

/// Dot products of one weight row with `mr` (1..=MAX_GROUP) activation rows starting at `m0`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `w` must be one row of `t` with
/// `a.k` columns.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_rows(t: WType, w: &[u8], a: &QActs, m0: usize, mr: usize, res: &mut [f32; MAX_GROUP]) {
    debug_assert!(m0 + mr <= a.m && w.len() == a.k / t.block() * t.block_bytes());
    match mr {
        1 => rows::<1>(t, w, a, m0, res),
        2 => rows::<2>(t, w, a, m0, res),
        3 => rows::<3>(t, w, a, m0, res),
        4 => rows::<4>(t, w, a, m0, res),
        5 => rows::<5>(t, w, a, m0, res),
        6 => rows::<6>(t, w, a, m0, res),
        7 => rows::<7>(t, w, a, m0, res),
        8 => rows::<8>(t, w, a, m0, res),
        9 => rows::<9>(t, w, a, m0, res),
        10 => rows::<10>(t, w, a, m0, res),
        11 => rows::<11>(t, w, a, m0, res),
        _ => rows::<12>(t, w, a, m0, res),
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

/// The f16 values at `p` and `q` as [p x8, q x8].
#[inline(always)]
unsafe fn pair_f16(p: *const u8, q: *const u8) -> __m512 {
    let a = std::ptr::read_unaligned(p as *const u16) as u32;
    let b = std::ptr::read_unaligned(q as *const u16) as u32;
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((a | (b << 16)) as i32));
    _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), _mm512_castps128_ps512(v))
}

/// 16 bytes of packed nibbles at `p` and at `q` -> 64 bytes in element order: p's low nibbles,
/// p's high nibbles, q's low, q's high.
#[inline(always)]
unsafe fn nibbles_pair(p: *const u8, q: *const u8) -> __m512i {
    let t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(p as *const __m128i)), _mm_loadu_si128(q as *const __m128i), 1);
    let z = _mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1);
    let z = _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
    // lanes [p lo, q lo, p hi, q hi] -> [p lo, p hi, q lo, q hi]
    _mm512_shuffle_i64x2(z, z, 0b11_01_10_00)
}

/// Weight bytes of blocks `p`, `q` as unsigned magnitudes (values for Q4_1) and the mask of the
/// bytes whose weight is negative (the activation is negated there).
#[inline(always)]
unsafe fn unpack_pair<const T: u8>(p: *const u8, q: *const u8) -> (__m512i, __mmask64) {
    match T {
        Q8_0 => {
            let lo = _mm256_loadu_si256(p.add(2) as *const __m256i);
            let hi = _mm256_loadu_si256(q.add(2) as *const __m256i);
            let v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            (_mm512_abs_epi8(v), _mm512_movepi8_mask(v))
        }
        Q4_0 => {
            let v = _mm512_sub_epi8(nibbles_pair(p.add(2), q.add(2)), _mm512_set1_epi8(8));
            (_mm512_abs_epi8(v), _mm512_movepi8_mask(v))
        }
        Q4_1 => (nibbles_pair(p.add(4), q.add(4)), 0),
        _ => {
            // Q5_0: w = nibble + 16 * bit - 16: |w| = nibble where the bit is set, 16 - nibble
            // (and w < 0) where it is clear.
            let nib = nibbles_pair(p.add(6), q.add(6));
            let hp = std::ptr::read_unaligned(p.add(2) as *const u32) as u64;
            let hq = std::ptr::read_unaligned(q.add(2) as *const u32) as u64;
            let set = hp | (hq << 32);
            (_mm512_mask_blend_epi8(set, _mm512_sub_epi8(_mm512_set1_epi8(16), nib), nib), !set)
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
    let pairs = a.pairs();
    let (d16, s16) = (a.d16.as_ptr(), a.s16.as_ptr());
    let mut acc = [_mm512_setzero_ps(); R];
    let mut mins = [_mm512_setzero_ps(); R];
    let mut b = 0;
    while b < nb {
        let full = b + 1 < nb;
        let p = wp.add(b * bb);
        let q = if full { p.add(bb) } else { p };
        let (u, neg) = unpack_pair::<T>(p, q);
        let dw = pair_f16(p, q);
        let mw = if T == Q4_1 { pair_f16(p.add(2), q.add(2)) } else { dw };
        for r in 0..R {
            let row = m0 + r;
            let xp = xq.add(row * k + b * 32);
            let x = if full { _mm512_loadu_si512(xp as *const __m512i) } else { _mm512_maskz_loadu_epi8(0xFFFF_FFFF, xp) };
            let x = if T == Q4_1 { x } else { _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x) };
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
            let e = (row * pairs + b / 2) * 16;
            let scale = _mm512_mul_ps(dw, _mm512_loadu_ps(d16.add(e)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
            if T == Q4_1 {
                mins[r] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(s16.add(e)), mins[r]);
            }
        }
        b += 2;
    }
    for r in 0..R {
        // each block's min term was added once per lane of its half: 8 times
        res[r] = _mm512_reduce_add_ps(acc[r]) + if T == Q4_1 { _mm512_reduce_add_ps(mins[r]) * 0.125 } else { 0.0 };
    }
}

/// Permutation indices putting i16 element `first` in lanes 0..16 and `first + 1` in 16..32.
#[inline(always)]
unsafe fn halves_idx(first: i16) -> __m512i {
    _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(first), _mm512_set1_epi16(first + 1))
}

#[inline(always)]
unsafe fn q4k<const R: usize>(w: &[u8], a: &QActs, m0: usize, res: &mut [f32; MAX_GROUP]) {
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr();
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let blk = &w[b * 144..(b + 1) * 144];
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let mut sc = [0i16; 8];
        let mut mn = [0i16; 16];
        for s in 0..8 {
            let (x, y) = scale_min_k4(s, &blk[4..16]);
            sc[s] = x as i16;
            mn[2 * s] = y as i16;
            mn[2 * s + 1] = y as i16;
        }
        let scv = _mm512_castsi128_si512(_mm_loadu_si128(sc.as_ptr() as *const __m128i));
        let mins = _mm256_loadu_si256(mn.as_ptr() as *const __m256i);
        let qs = blk.as_ptr().add(16);
        let mut wv = [_mm512_setzero_si512(); 4];
        let mut sv = [_mm512_setzero_si512(); 4];
        for j in 0..4 {
            // sub-blocks 2j (low nibbles) and 2j+1 (high nibbles) of 32 bytes
            let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            wv[j] = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), m4);
            sv[j] = _mm512_permutexvar_epi16(halves_idx(2 * j as i16), scv);
        }
        for r in 0..R {
            let row = m0 + r;
            let xp = xq.add(row * k + b * 256);
            let isum = dot_super_block(&wv, &sv, xp);
            let bs = _mm256_loadu_si256(a.bsums.as_ptr().add((row * nb + b) * 16) as *const __m256i);
            let msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins));
            let dx = *a.d.get_unchecked(row * nb + b);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(dx * d), acc[r]);
            acc[r] = _mm512_fnmadd_ps(_mm512_zextps256_ps512(msum), _mm512_set1_ps(dx * dmin), acc[r]);
        }
    }
    for r in 0..R {
        res[r] = _mm512_reduce_add_ps(acc[r]);
    }
}

/// Integer dot product of a 256-value K-quant super-block with one activation row: four vectors
/// of 64 unsigned weights `q`, each byte pair scaled by its sub-block scale in `s` (i16 lanes).
#[inline(always)]
unsafe fn dot_super_block(q: &[__m512i; 4], s: &[__m512i; 4], xp: *const i8) -> __m512i {
    let mut isum = _mm512_setzero_si512();
    for v in 0..4 {
        let xv = _mm512_loadu_si512(xp.add(64 * v) as *const __m512i);
        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q[v], xv), s[v]);
    }
    isum
}

#[inline(always)]
unsafe fn q6k<const R: usize>(w: &[u8], a: &QActs, m0: usize, res: &mut [f32; MAX_GROUP]) {
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr();
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    // per-half shift counts: quarter 0|1 (low nibbles) and 2|3 (high nibbles) of a 128-half
    let shl_lo = _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(4), _mm512_set1_epi16(2));
    let shr_hi = _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(0), _mm512_set1_epi16(2));
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let blk = w.as_ptr().add(b * 210);
        let (ql, qh) = (blk, blk.add(128));
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i));
        let scz = _mm512_castsi256_si512(sc16);
        let d = f16_at(std::slice::from_raw_parts(blk, 210), 208);
        // 4 vectors of 64 unsigned 6-bit values (q + 32) in element order; vector v spans the
        // 16-element groups 4v..4v+4.
        let mut qv = [_mm512_setzero_si512(); 4];
        let mut sv = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            let l = _mm512_loadu_si512(ql.add(64 * h) as *const __m512i);
            let hb = _mm512_broadcast_i64x4(_mm256_loadu_si256(qh.add(32 * h) as *const __m256i));
            qv[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_and_si512(_mm512_sllv_epi16(hb, shl_lo), m30));
            qv[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_and_si512(_mm512_srlv_epi16(hb, shr_hi), m30));
        }
        for v in 0..4 {
            // i16 lane i of the pair sums belongs to group 4v + i / 8
            let g = 4 * v as i16;
            let idx = _mm512_set_epi16(
                g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 3, g + 2, g + 2, g + 2, g + 2, g + 2, g + 2, g + 2, g + 2, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g, g, g, g, g, g, g, g,
            );
            sv[v] = _mm512_permutexvar_epi16(idx, scz);
        }
        for r in 0..R {
            let row = m0 + r;
            let xp = xq.add(row * k + b * 256);
            let isum = dot_super_block(&qv, &sv, xp);
            // the stored values are q + 32: subtract 32 * sum_g sc[g] * sum(x in g)
            let bs = _mm256_loadu_si256(a.bsums.as_ptr().add((row * nb + b) * 16) as *const __m256i);
            let corr = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
            let isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(corr));
            let dx = *a.d.get_unchecked(row * nb + b);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * dx), acc[r]);
        }
    }
    for r in 0..R {
        res[r] = _mm512_reduce_add_ps(acc[r]);
    }
}

/// The packed layout (`packed.rs`): `out[(m0 + r) * n + col0 + i]` = row i of the 16-row group
/// whose tiles are `tiles`, times activation row `m0 + r`, for `mr` (1..=MAX_GROUP) rows.
/// `prefetch` > 0 asks for the tile that many bytes ahead in the weight stream as each tile is read.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `tiles` must be one group's
/// tiles of a `t` matrix with `a.k` columns, and `out` must hold rows `m0 .. m0 + mr` of width
/// `n >= col0 + 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn packed_rows(t: WType, tiles: &[u8], a: &QActs, m0: usize, mr: usize, out: &mut [f32], n: usize, col0: usize, prefetch: usize) {
    debug_assert!(m0 + mr <= a.m && tiles.len() == a.k / t.block() * super::packed::tile_bytes(t));
    debug_assert!(out.len() >= (m0 + mr) * n && col0 + 16 <= n);
    let o = out.as_mut_ptr().add(col0);
    macro_rules! go {
        ($($r:literal)*) => {
            match mr {
                $($r => packed_t::<$r>(t, tiles, a, m0, o, n, prefetch),)*
                _ => packed_t::<12>(t, tiles, a, m0, o, n, prefetch),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8 9 10 11)
}

#[inline(always)]
unsafe fn packed_t<const R: usize>(t: WType, tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, pf: usize) {
    match t {
        WType::Q8_0 => packed::<R, Q8_0>(tiles, a, m0, o, n, pf),
        WType::Q4_0 => packed::<R, Q4_0>(tiles, a, m0, o, n, pf),
        WType::Q4_1 => packed::<R, Q4_1>(tiles, a, m0, o, n, pf),
        WType::Q5_0 => packed::<R, Q5_0>(tiles, a, m0, o, n, pf),
        WType::Q4K => packed_q4k::<R>(tiles, a, m0, o, n, pf),
        WType::Q6K => packed_q6k::<R>(tiles, a, m0, o, n, pf),
    }
}

/// 16 bytes at `p` (one per row) as 16 f32 lanes, unsigned or signed.
#[inline(always)]
unsafe fn bytes_ps<const SIGNED: bool>(p: *const u8) -> __m512 {
    let v = _mm_loadu_si128(p as *const __m128i);
    _mm512_cvtepi32_ps(if SIGNED { _mm512_cvtepi8_epi32(v) } else { _mm512_cvtepu8_epi32(v) })
}

/// Lanes (v, v) of i16 pairs, one per row: byte i of the 16 at `p` (one per row) widened into both
/// halves of 32-bit lane i, for `vpdpwssd` against an activation pair.
#[inline(always)]
unsafe fn dup_bytes_epi16(p: *const u8) -> __m512i {
    let b = _mm512_broadcast_i32x4(_mm_loadu_si128(p as *const __m128i));
    // every 128-bit lane holds the 16 bytes, so 32-bit lane i can take byte i; 0x80 gives a zero
    const IDX: [u32; 16] = {
        let mut v = [0u32; 16];
        let mut i = 0;
        while i < 16 {
            v[i] = 0x8000_8000 | (i as u32) << 16 | i as u32;
            i += 1;
        }
        v
    };
    let idx = _mm512_loadu_si512(IDX.as_ptr() as *const __m512i);
    _mm512_shuffle_epi8(b, idx)
}

/// Lanes (a_i, b_i) of sign-extended i16 pairs from 16 signed bytes a at `p` and 16 more b at
/// `p + 16` (one per row each).
#[inline(always)]
unsafe fn pair_bytes_epi16(p: *const u8) -> __m512i {
    let w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p as *const __m256i));
    let idx = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
    );
    _mm512_permutexvar_epi16(idx, w)
}

/// Four activation bytes (or two i16) at `p` in every 32-bit lane.
#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m512i {
    _mm512_set1_epi32(std::ptr::read_unaligned(p as *const i32))
}

/// Q4_K tiles: per super-block, `d * sum_s sc_s * sum(q * x) - dmin * sum_s min_s * sum(x)` for
/// every row lane, then times the activation scale. The min term is one `vpdpwssd` per sub-block
/// and row (the row's min in both i16 halves against the two 16-value sums of x), started before
/// the sub-blocks; each sub-block is 8 `vpdpbusd`, an int-to-float and an FMA per row.
#[inline(always)]
unsafe fn packed_q4k<const R: usize>(tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, pf: usize) {
    const TB: usize = 2368;
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr() as *const u8;
    let bsums = a.bsums.as_ptr() as *const u8;
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let p = tiles.as_ptr().add(b * TB);
        super::prefetch_ahead(p, TB, pf);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
        let ndmw = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32) as *const __m256i)));
        let mut sup = [_mm512_setzero_ps(); R];
        {
            let mut mins = [_mm512_setzero_si512(); 8];
            for (s, v) in mins.iter_mut().enumerate() {
                *v = dup_bytes_epi16(p.add(192 + 16 * s));
            }
            for r in 0..R {
                // the 16 sums of 16 values of this super-block: 2 per sub-block, as i16 pairs
                let bs = bsums.add(((m0 + r) * nb + b) * 32);
                let mut msum = _mm512_setzero_si512();
                for (s, v) in mins.iter().enumerate() {
                    msum = _mm512_dpwssd_epi32(msum, *v, bcast4(bs.add(4 * s)));
                }
                sup[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(msum), ndmw);
            }
        }
        for s in 0..8 {
            let scs = _mm512_mul_ps(bytes_ps::<false>(p.add(64 + 16 * s)), dw);
            let q = p.add(320 + 512 * (s / 2));
            let mut wv = [_mm512_setzero_si512(); 8];
            for j in 0..8 {
                let v = _mm512_loadu_si512(q.add(64 * j) as *const __m512i);
                wv[j] = _mm512_and_si512(if s % 2 == 0 { v } else { _mm512_srli_epi16(v, 4) }, m4);
            }
            for r in 0..R {
                let xb = xq.add((m0 + r) * k + b * 256 + 32 * s);
                let mut isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[0], bcast4(xb));
                for j in 1..8 {
                    isum = _mm512_dpbusd_epi32(isum, wv[j], bcast4(xb.add(4 * j)));
                }
                sup[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scs, sup[r]);
            }
        }
        for r in 0..R {
            acc[r] = _mm512_fmadd_ps(sup[r], _mm512_set1_ps(*a.d.get_unchecked((m0 + r) * nb + b)), acc[r]);
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(o.add((m0 + r) * n), acc[r]);
    }
}

/// Q6_K tiles: `d * sum_g sc_g * (sum(q * x) - 32 * sum(x))` over the 16-column groups g, for every
/// row lane. The offset term is one `vpdpwssd` per pair of groups and row (the row's two scales
/// against the two 16-value sums of x), started before the groups; each group is 4 `vpdpbusd`, an
/// int-to-float and an FMA per row.
#[inline(always)]
unsafe fn packed_q6k<const R: usize>(tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, pf: usize) {
    const TB: usize = 3360;
    let k = a.k;
    let nb = k / 256;
    let xq = a.qs.as_ptr() as *const u8;
    let bsums = a.bsums.as_ptr() as *const u8;
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let p = tiles.as_ptr().add(b * TB);
        super::prefetch_ahead(p, TB, pf);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
        let mut sup = [_mm512_setzero_ps(); R];
        {
            let n32dw = _mm512_mul_ps(dw, _mm512_set1_ps(-32.0));
            let mut scp = [_mm512_setzero_si512(); 8];
            for (h, v) in scp.iter_mut().enumerate() {
                *v = pair_bytes_epi16(p.add(32 + 32 * h));
            }
            for r in 0..R {
                let bs = bsums.add(((m0 + r) * nb + b) * 32);
                let mut corr = _mm512_setzero_si512();
                for (h, v) in scp.iter().enumerate() {
                    corr = _mm512_dpwssd_epi32(corr, *v, bcast4(bs.add(4 * h)));
                }
                sup[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(corr), n32dw);
            }
        }
        for g in 0..16 {
            let (p4, gg) = (g / 4, g % 4);
            let scg = _mm512_mul_ps(bytes_ps::<true>(p.add(32 + 16 * g)), dw);
            let mut wv = [_mm512_setzero_si512(); 4];
            for h in 0..4 {
                let c4 = 4 * gg + h;
                let l = _mm512_loadu_si512(p.add(288 + 64 * (8 * p4 + c4 % 8)) as *const __m512i);
                let lo = _mm512_and_si512(if c4 < 8 { l } else { _mm512_srli_epi16(l, 4) }, m4);
                let hb = _mm512_loadu_si512(p.add(2336 + 64 * (4 * p4 + h)) as *const __m512i);
                // bits 2gg..2gg+2 of each byte to bits 4..6
                let hb = match gg {
                    0 => _mm512_slli_epi16(hb, 4),
                    1 => _mm512_slli_epi16(hb, 2),
                    2 => hb,
                    _ => _mm512_srli_epi16(hb, 2),
                };
                wv[h] = _mm512_ternarylogic_epi32(lo, hb, m30, 0xF8);
            }
            for r in 0..R {
                let xb = xq.add((m0 + r) * k + b * 256 + 16 * g);
                let mut isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[0], bcast4(xb));
                for h in 1..4 {
                    isum = _mm512_dpbusd_epi32(isum, wv[h], bcast4(xb.add(4 * h)));
                }
                sup[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scg, sup[r]);
            }
        }
        for r in 0..R {
            acc[r] = _mm512_fmadd_ps(sup[r], _mm512_set1_ps(*a.d.get_unchecked((m0 + r) * nb + b)), acc[r]);
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(o.add((m0 + r) * n), acc[r]);
    }
}

#[inline(always)]
unsafe fn packed<const R: usize, const T: u8>(tiles: &[u8], a: &QActs, m0: usize, o: *mut f32, n: usize, pf: usize) {
    let (tb, off) = match T {
        Q8_0 => (544, 128),
        Q4_0 => (288, 8),
        Q4_1 => (320, 0),
        _ => (352, 16),
    };
    let k = a.k;
    let nb = k / 32;
    let xq = a.qs.as_ptr();
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let p = tiles.as_ptr().add(b * tb);
        super::prefetch_ahead(p, tb, pf);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
        let mut wv = [_mm512_setzero_si512(); 8];
        if T == Q8_0 {
            for j in 0..8 {
                wv[j] = _mm512_loadu_si512(p.add(32 + 64 * j) as *const __m512i);
            }
        } else {
            let nib = p.add(match T {
                Q4_0 => 32,
                Q4_1 => 64,
                _ => 96,
            });
            for j in 0..4 {
                let v = _mm512_loadu_si512(nib.add(64 * j) as *const __m512i);
                wv[j] = _mm512_and_si512(v, m4);
                wv[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            if T == Q5_0 {
                let sixteen = _mm512_set1_epi8(16);
                for j in 0..8 {
                    let h = _cvtu64_mask64(std::ptr::read_unaligned(p.add(32 + 8 * j) as *const u64));
                    wv[j] = _mm512_mask_add_epi8(wv[j], h, wv[j], sixteen);
                }
            }
        }
        let mw = if T == Q4_1 { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32) as *const __m256i)) } else { dw };
        for r in 0..R {
            let row = m0 + r;
            let xb = xq.add(row * k + b * 32) as *const i32;
            let e = row * nb + b;
            let mut s = if T == Q4_1 { _mm512_setzero_si512() } else { _mm512_set1_epi32(-off * *a.sums.get_unchecked(e)) };
            for j in 0..8 {
                s = _mm512_dpbusd_epi32(s, wv[j], _mm512_set1_epi32(std::ptr::read_unaligned(xb.add(j))));
            }
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*a.d.get_unchecked(e)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[r]);
            if T == Q4_1 {
                acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*a.s.get_unchecked(e)), acc[r]);
            }
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(o.add((m0 + r) * n), acc[r]);
    }
}
