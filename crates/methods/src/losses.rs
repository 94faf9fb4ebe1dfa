//! DeepGuard's three losses.
//!
//! ```text
//! L_gen = mean_t  -log p_cur(x_{t+1} | x_<=t)              next-token CE on the secure code
//! L_kl  = min(1, mean_t KL(p_ref(.|x_<=t) || p_cur(.|x_<=t)))  p_ref: same weights, adapters off
//! L_sec = max(0, delta - (S(secure) - S(vulnerable)))      margin on the analyzer's scores
//! L     = L_gen + w_sec L_sec + w_kl L_kl
//! ```
//! L_gen and L_kl live on the output head, whose (positions x 151,936) logits dominate the cost
//! of a training step. Their gradient with respect to the logits has a closed form,
//! dL/dz_t = w_gen (p_cur - onehot(x_{t+1})) / n + w_kl (p_cur - p_ref) / n, so [`head_losses`]
//! computes values and that gradient directly: no autograd graph over the vocabulary, and no
//! gradient for the frozen head weight (which candle's matmul backward would otherwise compute).

use anyhow::{bail, Result};
use candle_core::Tensor;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeadLosses {
    pub gen: f64,
    /// After the clamp.
    pub kl: f64,
    /// Before the clamp.
    pub kl_raw: f64,
}

/// exp(z - max z) of one row into `e`; returns (max, sum of e) — the row's log-sum-exp is
/// `max + ln(sum)`. Sums in f64.
fn exp_row(z: &[f32], e: &mut [f32]) -> (f32, f64) {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut s = 0f64;
    for (o, &x) in e.iter_mut().zip(z) {
        *o = (x - m).exp();
        s += *o as f64;
    }
    (m, s)
}

/// Values of L_gen and L_kl over positions 0..n-1 of `logits` / `ref_logits` (seq, vocab), where
/// position t predicts `ids[t + 1]`, and dL/dlogits for `w_gen * L_gen + w_kl * L_kl`
/// (seq, vocab; the last row is zero). The KL term stops contributing gradient when its mean
/// exceeds `kl_clamp`, as `min(kl, clamp)` does.
pub fn head_losses(logits: &Tensor, ref_logits: &Tensor, ids: &[u32], w_gen: f64, w_kl: f64, kl_clamp: f64) -> Result<(HeadLosses, Tensor)> {
    let (t, v) = logits.dims2()?;
    if ref_logits.dims2()? != (t, v) || ids.len() != t {
        bail!("head_losses: logits {:?}, reference {:?} and {} ids disagree", logits.dims(), ref_logits.dims(), ids.len());
    }
    if t < 2 {
        bail!("head_losses: a sequence needs at least 2 tokens, got {t}");
    }
    let z = logits.flatten_all()?.to_vec1::<f32>()?;
    let zr = ref_logits.flatten_all()?.to_vec1::<f32>()?;
    if let Some(&y) = ids[1..].iter().find(|&&y| y as usize >= v) {
        bail!("head_losses: target id {y} outside the vocabulary of {v}");
    }
    let n = (t - 1) as f64;
    // Row i of `gen_g` gets (p_cur - onehot) / n, of `kl_g` (p_cur - p_ref) / n; the rows are
    // split between threads.
    let mut gen_g = vec![0f32; t * v];
    let mut kl_g = vec![0f32; t * v];
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(t - 1).max(1);
    let per = (t - 1).div_ceil(threads);
    let sums: Vec<(f64, f64)> = std::thread::scope(|sc| {
        let handles: Vec<_> = gen_g[..(t - 1) * v]
            .chunks_mut(per * v)
            .zip(kl_g[..(t - 1) * v].chunks_mut(per * v))
            .enumerate()
            .map(|(c, (gg, kg))| {
                let (z, zr) = (&z, &zr);
                sc.spawn(move || {
                    let (mut gen, mut kl) = (0.0, 0.0);
                    for (r, (grow, krow)) in gg.chunks_mut(v).zip(kg.chunks_mut(v)).enumerate() {
                        let i = c * per + r;
                        let (zi, zri) = (&z[i * v..(i + 1) * v], &zr[i * v..(i + 1) * v]);
                        // Two exponentials per entry: exp(z - m) lands in `grow`, exp(z_ref - m_ref)
                        // in `krow`; both rows are then rewritten in place as gradients.
                        let (m, s) = exp_row(zi, grow);
                        let (mr, sr) = exp_row(zri, krow);
                        let (lse, lse_r) = (m as f64 + s.ln(), mr as f64 + sr.ln());
                        let (inv_s, inv_sr) = ((1.0 / s) as f32, (1.0 / sr) as f32);
                        let y = ids[i + 1] as usize;
                        gen += lse - zi[y] as f64;
                        // KL(p_ref || p_cur) = sum_j p_ref_j (log p_ref_j - log p_cur_j)
                        //                    = sum_j p_ref_j (zr_j - z_j) + lse - lse_r.
                        let mut cross = 0f64;
                        let inv_n = (1.0 / n) as f32;
                        for j in 0..v {
                            let pc = grow[j] * inv_s;
                            let pr = krow[j] * inv_sr;
                            cross += pr as f64 * (zri[j] - zi[j]) as f64;
                            grow[j] = pc * inv_n;
                            krow[j] = (pc - pr) * inv_n;
                        }
                        kl += cross + lse - lse_r;
                        grow[y] -= inv_n;
                    }
                    (gen, kl)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("loss thread")).collect()
    });
    let gen = sums.iter().map(|s| s.0).sum::<f64>() / n;
    let kl_raw = sums.iter().map(|s| s.1).sum::<f64>() / n;
    let kl_w = if kl_raw <= kl_clamp { w_kl as f32 } else { 0.0 };
    for (g, k) in gen_g.iter_mut().zip(&kl_g) {
        *g = w_gen as f32 * *g + kl_w * k;
    }
    let grad = Tensor::from_vec(gen_g, (t, v), logits.device())?;
    Ok((HeadLosses { gen, kl: kl_raw.min(kl_clamp), kl_raw }, grad))
}

/// max(0, delta - (s_secure - s_vulnerable)), averaged over pairs; inputs (pairs,).
pub fn margin_loss(s_secure: &Tensor, s_vulnerable: &Tensor, delta: f64) -> Result<Tensor> {
    Ok(((s_secure - s_vulnerable)?.neg()? + delta)?.relu()?.mean_all()?)
}
