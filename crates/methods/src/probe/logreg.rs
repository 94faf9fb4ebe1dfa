//! L2-regularised logistic regression on standardised features, fitted with L-BFGS; group-aware
//! k-fold cross-validation; accuracy, ROC AUC and pairwise accuracy.

use serde::{Deserialize, Serialize};

/// Row-major (rows, cols) f32 matrix.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data does not match its shape");
        Self { rows, cols, data }
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    pub fn select(&self, rows: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(rows.len() * self.cols);
        for &r in rows {
            data.extend_from_slice(self.row(r));
        }
        Matrix::new(rows.len(), self.cols, data)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn dot32(a: &[f32], b: &[f32]) -> f32 {
    // eight independent accumulators so the compiler vectorises the loop
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// A fitted probe, in raw feature space: p(y = 1 | x) = sigmoid(w · x + b).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogReg {
    pub w: Vec<f32>,
    pub b: f32,
}

impl LogReg {
    pub fn score(&self, x: &[f32]) -> f32 {
        dot32(&self.w, x) + self.b
    }
    pub fn prob(&self, x: &[f32]) -> f32 {
        sigmoid(self.score(x) as f64) as f32
    }

    /// Fits on `x` with labels `y` (true = positive class). Features are standardised with the
    /// training mean and standard deviation; the objective is mean log-loss + l2/2 |w|^2 in the
    /// standardised space (bias not penalised). The returned weights are mapped back to raw space.
    pub fn fit(x: &Matrix, y: &[bool], l2: f64) -> LogReg {
        let (n, d) = (x.rows, x.cols);
        assert_eq!(n, y.len());
        let mut mu = vec![0f64; d];
        let mut sd = vec![0f64; d];
        for i in 0..n {
            for (j, &v) in x.row(i).iter().enumerate() {
                mu[j] += v as f64;
            }
        }
        mu.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        for i in 0..n {
            for (j, &v) in x.row(i).iter().enumerate() {
                sd[j] += (v as f64 - mu[j]).powi(2);
            }
        }
        sd.iter_mut().for_each(|s| *s = (*s / n.max(1) as f64).sqrt().max(1e-8));
        let z: Vec<f32> = (0..n).flat_map(|i| x.row(i).iter().enumerate().map(|(j, &v)| ((v as f64 - mu[j]) / sd[j]) as f32).collect::<Vec<_>>()).collect();
        let z = Matrix::new(n, d, z);
        let t: Vec<f64> = y.iter().map(|&b| b as u8 as f64).collect();
        // parameters: d weights then the bias
        let f = |p: &[f64], g: &mut [f64]| -> f64 {
            let w32: Vec<f32> = p[..d].iter().map(|&v| v as f32).collect();
            let b = p[d];
            g.iter_mut().for_each(|v| *v = 0.0);
            let mut loss = 0.0;
            let mut gz = vec![0f32; d];
            let mut gb = 0.0;
            for i in 0..n {
                let s = dot32(&w32, z.row(i)) as f64 + b;
                // log(1 + e^s) - t s, stably
                loss += if s > 0.0 { s + (-s).exp().ln_1p() } else { s.exp().ln_1p() } - t[i] * s;
                let r = (sigmoid(s) - t[i]) as f32;
                gb += r as f64;
                for (gj, &zj) in gz.iter_mut().zip(z.row(i)) {
                    *gj += r * zj;
                }
            }
            let inv = 1.0 / n.max(1) as f64;
            for j in 0..d {
                g[j] = gz[j] as f64 * inv + l2 * p[j];
            }
            g[d] = gb * inv;
            loss * inv + 0.5 * l2 * dot(&p[..d], &p[..d])
        };
        let p = lbfgs(f, vec![0.0; d + 1], 300, 1e-6);
        let w: Vec<f32> = (0..d).map(|j| (p[j] / sd[j]) as f32).collect();
        let b = p[d] - (0..d).map(|j| p[j] * mu[j] / sd[j]).sum::<f64>();
        LogReg { w, b: b as f32 }
    }
}

pub fn sigmoid(s: f64) -> f64 {
    if s >= 0.0 {
        1.0 / (1.0 + (-s).exp())
    } else {
        let e = s.exp();
        e / (1.0 + e)
    }
}

/// Minimises `f` (which writes its gradient into the second argument) with L-BFGS (memory 10)
/// and a backtracking Armijo line search; stops when the gradient's max-norm is below `tol`.
pub fn lbfgs(f: impl Fn(&[f64], &mut [f64]) -> f64, mut x: Vec<f64>, max_iter: usize, tol: f64) -> Vec<f64> {
    let m = 10;
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut g_new = vec![0.0; n];
    for _ in 0..max_iter {
        if g.iter().fold(0.0f64, |a, v| a.max(v.abs())) < tol {
            break;
        }
        // two-loop recursion: direction = -H g
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push((a, rho));
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y), (a, rho)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // not a descent direction: restart from steepest descent
            s_hist.clear();
            y_hist.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = dot(&g, &dir);
        }
        let mut step = if s_hist.is_empty() { 1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0) } else { 1.0 };
        let mut x_new;
        let mut f_new;
        let mut tries = 0;
        loop {
            x_new = x.iter().zip(&dir).map(|(xi, di)| xi + step * di).collect::<Vec<_>>();
            f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope || tries > 40 {
                break;
            }
            step *= 0.5;
            tries += 1;
        }
        if f_new > fx {
            break;
        }
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let improved = fx - f_new;
        x = x_new;
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        if dot(&s, &y) > 1e-12 {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > m {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        if improved.abs() < 1e-12 * fx.abs().max(1.0) {
            break;
        }
    }
    x
}

pub use deepguard_runtime::rng::SplitMix;

/// Assigns `n` groups to `k` folds of near-equal size, shuffled by `seed`.
pub fn folds(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix(seed);
    for i in (1..n).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut fold = vec![0; n];
    for (pos, &g) in order.iter().enumerate() {
        fold[g] = pos % k.max(1);
    }
    fold
}

/// Out-of-fold scores: each item is scored by a probe fitted on the folds its group is not in.
/// `group[i]` is item i's group (a pair: both sides of a pair always share a fold).
pub fn cross_val_scores(x: &Matrix, y: &[bool], group: &[usize], fold_of_group: &[usize], k: usize, l2: f64) -> Vec<f32> {
    let mut scores = vec![0f32; x.rows];
    for f in 0..k {
        let train: Vec<usize> = (0..x.rows).filter(|&i| fold_of_group[group[i]] != f).collect();
        let test: Vec<usize> = (0..x.rows).filter(|&i| fold_of_group[group[i]] == f).collect();
        if test.is_empty() || train.is_empty() {
            continue;
        }
        let ytr: Vec<bool> = train.iter().map(|&i| y[i]).collect();
        let probe = LogReg::fit(&x.select(&train), &ytr, l2);
        for &i in &test {
            scores[i] = probe.score(x.row(i));
        }
    }
    scores
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Threshold 0 on the score (p = 0.5).
    pub accuracy: f64,
    pub auc: f64,
    /// Fraction of pairs whose secure side scores higher (ties count one half).
    pub pair_accuracy: f64,
}

/// Metrics of scores for items laid out as pairs: item 2i is pair i's vulnerable side (label
/// false), item 2i+1 its secure side (label true).
pub fn pair_metrics(scores: &[f32]) -> Metrics {
    let y: Vec<bool> = (0..scores.len()).map(|i| i % 2 == 1).collect();
    let accuracy = scores.iter().zip(&y).filter(|(&s, &t)| (s >= 0.0) == t).count() as f64 / scores.len().max(1) as f64;
    let pairs = scores.len() / 2;
    let pair_accuracy = (0..pairs)
        .map(|i| match scores[2 * i + 1].partial_cmp(&scores[2 * i]) {
            Some(std::cmp::Ordering::Greater) => 1.0,
            Some(std::cmp::Ordering::Equal) => 0.5,
            _ => 0.0,
        })
        .sum::<f64>()
        / pairs.max(1) as f64;
    Metrics { accuracy, auc: auc(scores, &y), pair_accuracy }
}

/// ROC AUC via the rank-sum (Mann-Whitney) statistic with average ranks for ties.
pub fn auc(scores: &[f32], y: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    let n_pos = y.iter().filter(|&&t| t).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return 0.5;
    }
    let sum_pos: f64 = ranks.iter().zip(y).filter(|(_, &t)| t).map(|(r, _)| r).sum();
    (sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), 0.75);
        assert_eq!(auc(&[1.0, 1.0], &[false, true]), 0.5);
        assert_eq!(auc(&[0.0, 1.0, 2.0], &[false, true, true]), 1.0);
    }

    #[test]
    fn pair_metrics_count_ties_as_half() {
        // pair 0 right, pair 1 tie, pair 2 wrong
        let m = pair_metrics(&[-1.0, 1.0, 0.5, 0.5, 2.0, -2.0]);
        assert_eq!(m.pair_accuracy, 0.5);
        assert!((m.accuracy - 3.0 / 6.0).abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn logistic_regression_recovers_a_separating_direction() {
        // y = [x0 - 2 x1 > 0.3], features on very different scales
        let mut rng = SplitMix(3);
        let mut u = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let n = 400;
        let mut data = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let (a, b, c) = (u(), u(), u());
            data.extend_from_slice(&[a as f32, (b * 1000.0) as f32, (c * 0.01) as f32]);
            y.push(a - 2.0 * b > 0.1);
        }
        let x = Matrix::new(n, 3, data);
        let p = LogReg::fit(&x, &y, 1e-4);
        let acc = (0..n).filter(|&i| (p.prob(x.row(i)) >= 0.5) == y[i]).count() as f64 / n as f64;
        assert!(acc > 0.97, "train accuracy {acc}");
        // direction: w0 > 0, w1 < 0 (per raw unit b*1000), w2 irrelevant
        assert!(p.w[0] > 0.0 && p.w[1] < 0.0, "{:?}", p.w);
        let ratio = p.w[0] as f64 / (-p.w[1] as f64 * 1000.0);
        assert!((ratio - 0.5).abs() < 0.15, "w0 / (2 w1') should be ~0.5, got {ratio}");
        // strong L2 shrinks the weights
        let q = LogReg::fit(&x, &y, 10.0);
        assert!(q.w[0].abs() < p.w[0].abs() / 5.0);
    }

    #[test]
    fn lbfgs_minimises_a_quadratic() {
        // f = sum_i c_i (x_i - i)^2
        let f = |x: &[f64], g: &mut [f64]| {
            let mut v = 0.0;
            for i in 0..x.len() {
                let c = 1.0 + i as f64 * 10.0;
                v += c * (x[i] - i as f64).powi(2);
                g[i] = 2.0 * c * (x[i] - i as f64);
            }
            v
        };
        let x = lbfgs(f, vec![0.0; 6], 200, 1e-9);
        for (i, v) in x.iter().enumerate() {
            assert!((v - i as f64).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn folds_are_balanced_seeded_and_cover_all_groups() {
        let a = folds(23, 5, 42);
        assert_eq!(a, folds(23, 5, 42));
        assert_ne!(a, folds(23, 5, 43));
        for f in 0..5 {
            let c = a.iter().filter(|&&x| x == f).count();
            assert!(c == 4 || c == 5, "fold {f} has {c}");
        }
    }

    #[test]
    fn cross_validation_keeps_pairs_together_and_detects_signal() {
        // 60 pairs; the secure side has feature 0 shifted by +1 relative to its vulnerable twin,
        // feature 1 identifies the pair (shared by both sides). Pairwise accuracy must be ~1.
        let mut rng = SplitMix(9);
        let mut u = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let mut data = Vec::new();
        for _ in 0..60 {
            let base = (u() * 4.0) as f32;
            let id = (u() * 10.0) as f32;
            data.extend_from_slice(&[base, id]);
            data.extend_from_slice(&[base + 1.0, id]);
        }
        let x = Matrix::new(120, 2, data);
        let y: Vec<bool> = (0..120).map(|i| i % 2 == 1).collect();
        let group: Vec<usize> = (0..120).map(|i| i / 2).collect();
        let fg = folds(60, 5, 1);
        let s = cross_val_scores(&x, &y, &group, &fg, 5, 1e-3);
        let m = pair_metrics(&s);
        assert_eq!(m.pair_accuracy, 1.0, "{m:?}");
        assert!(m.auc > 0.6 && m.auc < 1.0, "item-level AUC is limited by the spread of `base`: {m:?}");
    }
}
