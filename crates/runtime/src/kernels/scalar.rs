//! Reference kernels: the integer block dot products written out plainly.

use super::{f16_at, scale_min_k4, QActs, WType, MAX_GROUP};

pub fn dot_rows(t: WType, w: &[u8], a: &QActs, m0: usize, mr: usize, res: &mut [f32; MAX_GROUP]) {
    for i in 0..mr {
        res[i] = dot_row(t, w, a, m0 + i);
    }
}

fn dot_row(t: WType, w: &[u8], a: &QActs, row: usize) -> f32 {
    let k = a.k;
    let x = &a.qs[row * k..(row + 1) * k];
    let bb = t.block_bytes();
    let nb = k / t.block();
    let mut sum = 0f32;
    for b in 0..nb {
        let blk = &w[b * bb..(b + 1) * bb];
        match t {
            WType::Q8_0 | WType::Q4_0 | WType::Q5_0 | WType::Q4_1 => {
                let xb = &x[b * 32..(b + 1) * 32];
                let d = f16_at(blk, 0);
                let dx = a.d[row * nb + b];
                let q = decode32(t, blk);
                let isum: i32 = q.iter().zip(xb).map(|(&w, &x)| w * x as i32).sum();
                sum += d * dx * isum as f32;
                if t == WType::Q4_1 {
                    sum += f16_at(blk, 2) * a.s[row * nb + b];
                }
            }
            WType::Q4K => {
                let xb = &x[b * 256..(b + 1) * 256];
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let scales = &blk[4..16];
                let qs = &blk[16..144];
                let dx = a.d[row * nb + b];
                let (mut isum, mut msum) = (0i32, 0i32);
                for s in 0..8 {
                    let (sc, m) = scale_min_k4(s, scales);
                    let mut sub = 0i32;
                    for l in 0..32 {
                        let byte = qs[(s / 2) * 32 + l];
                        let q = if s % 2 == 0 { byte & 0xF } else { byte >> 4 };
                        sub += q as i32 * xb[s * 32 + l] as i32;
                    }
                    isum += sc as i32 * sub;
                    let bs = &a.bsums[(row * nb + b) * 16..];
                    msum += m as i32 * (bs[2 * s] as i32 + bs[2 * s + 1] as i32);
                }
                sum += dx * (d * isum as f32 - dmin * msum as f32);
            }
            WType::Q6K => {
                let xb = &x[b * 256..(b + 1) * 256];
                let (ql, qh) = (&blk[0..128], &blk[128..192]);
                let sc = &blk[192..208];
                let d = f16_at(blk, 208);
                let dx = a.d[row * nb + b];
                let mut isum = 0i32;
                for e in 0..256 {
                    let (half, within) = (e / 128, e % 128);
                    let (quarter, l) = (within / 32, within % 32);
                    let lo = ql[64 * half + l + 32 * (quarter % 2)];
                    let lo = if quarter < 2 { lo & 0xF } else { lo >> 4 };
                    let hi = (qh[32 * half + l] >> (2 * quarter)) & 3;
                    let q = (lo | (hi << 4)) as i32 - 32;
                    isum += sc[e / 16] as i8 as i32 * q * xb[e] as i32;
                }
                sum += d * dx * isum as f32;
            }
        }
    }
    sum
}

/// The 32 signed integer weights of a 32-block (Q4_1: the unsigned nibbles; its min is separate).
pub fn decode32(t: WType, blk: &[u8]) -> [i32; 32] {
    let mut q = [0i32; 32];
    match t {
        WType::Q8_0 => {
            for i in 0..32 {
                q[i] = blk[2 + i] as i8 as i32;
            }
        }
        WType::Q4_0 | WType::Q4_1 => {
            let (qs, off) = if t == WType::Q4_0 { (&blk[2..18], 8) } else { (&blk[4..20], 0) };
            for j in 0..16 {
                q[j] = (qs[j] & 0xF) as i32 - off;
                q[j + 16] = (qs[j] >> 4) as i32 - off;
            }
        }
        WType::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let qs = &blk[6..22];
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                q[j] = ((qs[j] & 0xF) as u32 | h0) as i32 - 16;
                q[j + 16] = ((qs[j] >> 4) as u32 | h1) as i32 - 16;
            }
        }
        WType::Q4K | WType::Q6K => unreachable!("not a 32-block type"),
    }
    q
}
