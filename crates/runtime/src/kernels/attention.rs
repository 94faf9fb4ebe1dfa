//! Causal grouped-query attention for the inference path, read straight from the KV cache.
//!
//! `softmax(q k^T / sqrt(d) + causal mask) v` one query at a time: no score matrix, no mask
//! tensor, no copies of K/V. Training keeps the differentiable candle composition
//! (`Decoder::attention_ops`); what this kernel saves over it is measured in docs/speed.md.

use super::vmath::{axpy, dot, exp_shifted_sum, max};
use super::SendPtr;

/// Keys or values of one layer: element `[b][h][j][..head_dim]` is at `b * batch_stride +
/// h * head_stride + j * head_dim` in `data`.
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    pub data: &'a [f32],
    pub batch_stride: usize,
    pub head_stride: usize,
}

/// Attention shapes: `t` new queries at absolute positions `pos..pos + t`, so query `i` sees
/// keys `0..=pos + i`.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub batch: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub t: usize,
    pub pos: usize,
}

/// `q` is (batch, n_heads, t, head_dim) contiguous; returns (batch, t, n_heads * head_dim).
pub fn causal_attention(q: &[f32], k: KvView, v: KvView, s: AttnShape) -> Vec<f32> {
    let AttnShape { batch, n_heads: nh, n_kv_heads: nkv, head_dim: hd, t, pos } = s;
    assert!(nkv > 0 && nh % nkv == 0, "{nh} query heads do not share {nkv} key/value heads evenly");
    assert_eq!(q.len(), batch * nh * t * hd);
    let kv_len = pos + t;
    for kv in [&k, &v] {
        let need = (batch - 1) * kv.batch_stride + (nkv - 1) * kv.head_stride + kv_len * hd;
        assert!(batch == 0 || kv.data.len() >= need, "key/value view too short: {} < {need}", kv.data.len());
    }
    let mut out = vec![0f32; batch * t * nh * hd];
    let group = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    // one unit = one (sequence, query head): all its t queries
    let unit = |u: usize, scores: &mut Vec<f32>| {
        let (bi, h) = (u / nh, u % nh);
        let kh = h / group;
        let kb = &k.data[bi * k.batch_stride + kh * k.head_stride..];
        let vb = &v.data[bi * v.batch_stride + kh * v.head_stride..];
        for i in 0..t {
            let n = pos + i + 1;
            let qi = &q[((bi * nh + h) * t + i) * hd..][..hd];
            // SAFETY: unit (bi, h) alone writes the head_dim values of head h at each of its rows.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(((bi * t + i) * nh + h) * hd), hd) };
            #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
            match hd {
                64 => {
                    attend_x8::<8>(qi, &kb[..n * hd], &vb[..n * hd], n, scale, scores, o);
                    continue;
                }
                128 => {
                    attend_x8::<16>(qi, &kb[..n * hd], &vb[..n * hd], n, scale, scores, o);
                    continue;
                }
                _ => {}
            }
            attend(qi, kb, vb, n, scale, scores, o);
        }
    };
    let units = batch * nh;
    // multiply-adds of the whole call; below ~64k the thread pool's wake-up costs more than it saves
    let work = units * t * (pos + t.div_ceil(2)) * hd * 2;
    let pool = super::pool::global();
    if pool.threads() == 1 || units < 2 || work < 1 << 16 {
        let mut scores = Vec::with_capacity(kv_len);
        (0..units).for_each(|u| unit(u, &mut scores));
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        pool.run(|| {
            let mut scores = Vec::with_capacity(kv_len);
            loop {
                let u = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if u >= units {
                    return;
                }
                unit(u, &mut scores);
            }
        });
    }
    out
}

/// One query against keys/values `0..n` (rows of `q.len()` values): `o = softmax(q k^T * scale) v`.
fn attend(q: &[f32], k: &[f32], v: &[f32], n: usize, scale: f32, scores: &mut Vec<f32>, o: &mut [f32]) {
    let hd = q.len();
    scores.clear();
    scores.extend((0..n).map(|j| dot(q, &k[j * hd..(j + 1) * hd]) * scale));
    let m = max(scores);
    let sum = exp_shifted_sum(scores, m, 1.0);
    o.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        axpy(p, &v[j * hd..(j + 1) * hd], o);
    }
    let inv = (1.0 / sum) as f32;
    o.iter_mut().for_each(|x| *x *= inv);
}

/// [`attend`] for head size `8 * C` (64: Qwen2.5-0.5B, 128: Qwen2.5-1.5B) with AVX2 + FMA (the
/// build's baseline on x86-64): the query and the output are `C` vectors each, and four scores
/// share one horizontal reduction.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[allow(clippy::too_many_arguments)]
fn attend_x8<const C: usize>(q: &[f32], k: &[f32], v: &[f32], n: usize, scale: f32, scores: &mut Vec<f32>, o: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = 8 * C;
    assert!(q.len() == d && o.len() == d && k.len() >= n * d && v.len() >= n * d);
    scores.resize(n.next_multiple_of(4), 0.0);
    // SAFETY: AVX2 and FMA are enabled at compile time (cfg above); every load reads inside
    // q[..d], k[..n * d] or v[..n * d] and every store inside scores or o (asserted above).
    unsafe {
        let kp = k.as_ptr();
        let qv: [__m256; C] = std::array::from_fn(|c| _mm256_loadu_ps(q.as_ptr().add(8 * c)));
        let row = |j: usize| -> __m256 {
            let r = kp.add(j * d);
            let mut a = _mm256_mul_ps(qv[0], _mm256_loadu_ps(r));
            let mut b = _mm256_mul_ps(qv[1], _mm256_loadu_ps(r.add(8)));
            for c in (2..C).step_by(2) {
                a = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(r.add(8 * c)), a);
                b = _mm256_fmadd_ps(qv[c + 1], _mm256_loadu_ps(r.add(8 * c + 8)), b);
            }
            _mm256_add_ps(a, b)
        };
        let sc = _mm_set1_ps(scale);
        let mut j = 0;
        while j + 4 <= n {
            // four 8-lane partial sums -> four scores
            let (s0, s1, s2, s3) = (row(j), row(j + 1), row(j + 2), row(j + 3));
            let h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
            let r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(scores.as_mut_ptr().add(j), _mm_mul_ps(r, sc));
            j += 4;
        }
        while j < n {
            let s = row(j);
            let r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            let r = _mm_add_ss(r, _mm_shuffle_ps(r, r, 1));
            scores[j] = _mm_cvtss_f32(r) * scale;
            j += 1;
        }
        scores.truncate(n);
        let m = max(scores);
        let sum = exp_shifted_sum(scores, m, 1.0);
        let vp = v.as_ptr();
        let mut acc = [_mm256_setzero_ps(); C];
        for (j, &p) in scores.iter().enumerate() {
            let pv = _mm256_set1_ps(p);
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vp.add(j * d + 8 * c)), *a);
            }
        }
        let inv = _mm256_set1_ps((1.0 / sum) as f32);
        for (c, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(8 * c), _mm256_mul_ps(*a, inv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores, mask, softmax, weighted sum: the textbook formula in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttnShape, cap: usize) -> Vec<f32> {
        let AttnShape { batch, n_heads: nh, n_kv_heads: nkv, head_dim: hd, t, pos } = s;
        let mut out = vec![0f32; batch * t * nh * hd];
        for b in 0..batch {
            for h in 0..nh {
                let kh = h / (nh / nkv);
                for i in 0..t {
                    let qi = &q[((b * nh + h) * t + i) * hd..][..hd];
                    let at = |x: &[f32], j: usize| x[((b * nkv + kh) * cap + j) * hd..][..hd].to_vec();
                    let sc: Vec<f64> = (0..=pos + i)
                        .map(|j| at(k, j).iter().zip(qi).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let y: f64 = e.iter().enumerate().map(|(j, p)| p * at(v, j)[d] as f64).sum::<f64>() / z;
                        out[((b * t + i) * nh + h) * hd + d] = y as f32;
                    }
                }
            }
        }
        out
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn matches_the_textbook_formula_for_prefill_decode_gqa_and_batches() {
        // (batch, heads, kv heads, head_dim, t, pos, cache capacity): prefill, decode after a
        // prompt, a chunk after a prompt, plain multi-head, odd head_dim (a tail in the dot
        // product), a batch big enough for the thread pool
        for &(batch, nh, nkv, hd, t, pos, cap) in &[
            (1, 14, 2, 64, 9, 0, 9),
            (1, 14, 2, 64, 1, 37, 50),
            (1, 12, 2, 128, 9, 0, 9),
            (2, 12, 2, 128, 1, 37, 50),
            (2, 6, 3, 32, 5, 11, 20),
            (3, 4, 4, 16, 1, 0, 1),
            (1, 3, 1, 21, 4, 2, 6),
            (10, 14, 2, 64, 1, 300, 301),
        ] {
            let s = AttnShape { batch, n_heads: nh, n_kv_heads: nkv, head_dim: hd, t, pos };
            let q = noise(batch * nh * t * hd, 1);
            let k = noise(batch * nkv * cap * hd, 2);
            let v = noise(batch * nkv * cap * hd, 3);
            let view = |d| KvView { data: d, batch_stride: nkv * cap * hd, head_stride: cap * hd };
            let got = causal_attention(&q, view(&k), view(&v), s);
            let want = reference(&q, &k, &v, s, cap);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4, "{s:?}: max error {err}");
        }
    }

    #[test]
    fn keys_past_the_query_position_are_never_read() {
        // poison every cache slot after position pos + t - 1: a leak past the causal boundary
        // (or past the filled part of the cache) turns the output into NaN
        let (nh, nkv, hd, t, pos, cap) = (4, 2, 8, 3, 5, 16);
        let s = AttnShape { batch: 1, n_heads: nh, n_kv_heads: nkv, head_dim: hd, t, pos };
        let q = noise(nh * t * hd, 4);
        let mut k = noise(nkv * cap * hd, 5);
        let mut v = noise(nkv * cap * hd, 6);
        for h in 0..nkv {
            for j in pos + t..cap {
                k[(h * cap + j) * hd..][..hd].fill(f32::NAN);
                v[(h * cap + j) * hd..][..hd].fill(f32::NAN);
            }
        }
        let view = |d| KvView { data: d, batch_stride: nkv * cap * hd, head_stride: cap * hd };
        let out = causal_attention(&q, view(&k), view(&v), s);
        assert!(out.iter().all(|x| x.is_finite()));
        // and the first query (position pos) does not see the keys of positions pos+1, pos+2
        let mut k2 = k.clone();
        for h in 0..nkv {
            k2[(h * cap + pos + 1) * hd..][..2 * hd].fill(1e3);
        }
        let out2 = causal_attention(&q, view(&k2), view(&v), s);
        for h in 0..nh {
            assert_eq!(out[h * hd..(h + 1) * hd], out2[h * hd..(h + 1) * hd], "query 0, head {h}");
        }
        assert_ne!(out[nh * hd..], out2[nh * hd..]);
    }
}
