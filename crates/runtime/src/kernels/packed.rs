//! The row-interleaved ("packed") layout of quantized matrices, and its reference kernel.
//!
//! ggml stores a matrix row after row. Here every 16 consecutive rows are stored together, one
//! *tile* per 32-column block: the tile of block b holds that block of all 16 rows, arranged so
//! that one 64-byte vector holds four consecutive weights of each row (bytes 4i..4i+4 = row i).
//! A single `vpdpbusd` against four activation bytes broadcast to every lane then advances 16
//! output rows at once, and the block scales of those rows are one vector. Per activation row and
//! block of 16 x 32 weights that is 8 dot instructions plus 3 for the scales, where the row-major
//! kernels spend about 7 instructions per 64 weights; the unpacking of each tile is shared by all
//! activation rows of a batch.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so weights are stored unsigned: `u = w + off`
//! (128 for Q8_0, 8 for Q4_0, 16 for Q5_0 — for the 4- and 5-bit types that is exactly ggml's
//! stored code; Q4_1's codes are unsigned already, off = 0). Then
//! `sum(w * x) = sum(u * x) - off * sum(x)`, and the activation sums are computed once per block
//! with the activations ([`QActs::sums`]).
//!
//! Tile bytes (16 rows; the same count as 16 ggml blocks, so the matrix keeps its size):
//!
//! | type | layout |
//! |---|---|
//! | Q8_0 | `d[16]` f16, then `V[8]`: byte 4i+t of V_j = u(row i, column 4j+t) |
//! | Q4_0 | `d[16]`, then `N[4]`: byte 4i+t of N_j = u(i, 4j+t) in the low nibble, u(i, 4j+16+t) in the high one |
//! | Q4_1 | `d[16]`, `m[16]` f16, then `N[4]` |
//! | Q5_0 | `d[16]`, `H[8]` u64: bit 4i+t of H_j = bit 4 of u(i, 4j+t), then `N[4]` with the low 4 bits |
//!
//! K-quants (one tile = 16 rows x one 256-column super-block) keep their integer codes and
//! scales exactly. Q4_K's 6-bit scales and mins are widened to a byte each, so its tile is 64
//! bytes larger than 16 blocks (+2.8%); Q6_K's tile is exactly 16 blocks:
//!
//! | type | layout |
//! |---|---|
//! | Q4_K | `d[16]`, `dmin[16]` f16, `sc[8][16]`, `min[8][16]` u8, then `N[4][8]`: byte 4i+t of N_{p,j} = q(i, 64p+4j+t) low, q(i, 64p+32+4j+t) high |
//! | Q6_K | `d[16]` f16, `sc[16][16]` i8, `L[4][8]`: low 4 bits as Q4_K's `N`, `H[4][4]`: bits 2c..2c+2 of byte 4i+t of H_{p,h} = bits 4..6 of q(i, 64p+16c+4h+t) |
//!
//! Q6_K's codes are stored as ggml stores them, unsigned (`w = q - 32`): the same offset trick.
//!
//! Tiles are stored group by group (all blocks of rows 0..16, then of rows 16..32, ...), so a
//! thread working on a group of rows reads one contiguous stretch.

use super::{QActs, WType};

/// Rows per interleaved group.
pub const ROWS: usize = 16;

/// Whether a matrix of this type and shape can take the packed layout.
pub fn packable(t: WType, rows: usize, cols: usize) -> bool {
    rows % ROWS == 0 && cols % t.block() == 0 && rows > 0
}

/// Bytes of a packed matrix.
pub fn packed_len(t: WType, rows: usize, cols: usize) -> usize {
    rows / ROWS * (cols / t.block()) * tile_bytes(t)
}

/// The offset added to every weight to make it unsigned.
pub(crate) fn offset(t: WType) -> i32 {
    match t {
        WType::Q8_0 => 128,
        WType::Q4_0 => 8,
        WType::Q5_0 => 16,
        _ => 0,
    }
}

/// Bytes per tile (16 rows x one block).
pub(crate) fn tile_bytes(t: WType) -> usize {
    match t {
        WType::Q4K => 2368,
        WType::Q6K => 3360,
        _ => ROWS * t.block_bytes(),
    }
}

// Q4_K tile sections
const K4_DMIN: usize = 32;
const K4_SC: usize = 64;
const K4_MIN: usize = 192;
const K4_Q: usize = 320;
// Q6_K tile sections
const K6_SC: usize = 32;
const K6_LO: usize = 288;
const K6_HI: usize = 2336;

/// Where code `e` (0..256) of row `i` sits in a K-quant tile: the byte of its low 4 bits and the
/// shift in it; for Q6_K also the byte of its top 2 bits and that shift.
fn k_slot(t: WType, i: usize, e: usize) -> (usize, u32, usize, u32) {
    let (p, c) = (e / 64, e % 64);
    let (c4, l) = (c / 4, 4 * i + c % 4);
    let lo = if t == WType::Q4K { K4_Q } else { K6_LO } + 64 * (8 * p + c4 % 8) + l;
    (lo, 4 * (c4 / 8) as u32, K6_HI + 64 * (4 * p + c4 % 4) + l, 2 * (c4 / 4) as u32)
}

/// ggml block of row `i` -> its place in a K-quant tile.
fn put_k(t: WType, tile: &mut [u8], i: usize, blk: &[u8]) {
    let mut q = [0u8; 256];
    if t == WType::Q4K {
        tile[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
        tile[K4_DMIN + 2 * i..K4_DMIN + 2 * i + 2].copy_from_slice(&blk[2..4]);
        for s in 0..8 {
            let (sc, m) = super::scale_min_k4(s, &blk[4..16]);
            tile[K4_SC + 16 * s + i] = sc;
            tile[K4_MIN + 16 * s + i] = m;
        }
        for (e, q) in q.iter_mut().enumerate() {
            let byte = blk[16 + 32 * (e / 64) + e % 32];
            *q = if (e / 32) % 2 == 0 { byte & 0xF } else { byte >> 4 };
        }
    } else {
        tile[2 * i..2 * i + 2].copy_from_slice(&blk[208..210]);
        for g in 0..16 {
            tile[K6_SC + 16 * g + i] = blk[192 + g];
        }
        for (e, q) in q.iter_mut().enumerate() {
            let (half, l) = (e / 128, e % 32);
            let quarter = (e % 128) / 32;
            let lo = blk[64 * half + l + 32 * (quarter % 2)];
            let lo = if quarter < 2 { lo & 0xF } else { lo >> 4 };
            *q = lo | (((blk[128 + 32 * half + l] >> (2 * quarter)) & 3) << 4);
        }
    }
    for (e, &q) in q.iter().enumerate() {
        let (lo, ls, hi, hs) = k_slot(t, i, e);
        tile[lo] |= (q & 0xF) << ls;
        if t == WType::Q6K {
            tile[hi] |= (q >> 4) << hs;
        }
    }
}

/// The 256 codes of row `i` in a K-quant tile.
pub(crate) fn k_codes(t: WType, tile: &[u8], i: usize) -> [u8; 256] {
    let mut q = [0u8; 256];
    for (e, q) in q.iter_mut().enumerate() {
        let (lo, ls, hi, hs) = k_slot(t, i, e);
        *q = (tile[lo] >> ls) & 0xF;
        if t == WType::Q6K {
            *q |= ((tile[hi] >> hs) & 3) << 4;
        }
    }
    q
}

/// Row `i` of a K-quant tile -> its ggml block.
fn get_k(t: WType, tile: &[u8], i: usize, blk: &mut [u8]) {
    let q = k_codes(t, tile, i);
    blk.fill(0);
    if t == WType::Q4K {
        blk[0..2].copy_from_slice(&tile[2 * i..2 * i + 2]);
        blk[2..4].copy_from_slice(&tile[K4_DMIN + 2 * i..K4_DMIN + 2 * i + 2]);
        let sc = |s: usize| tile[K4_SC + 16 * s + i];
        let mn = |s: usize| tile[K4_MIN + 16 * s + i];
        // the inverse of ggml's get_scale_min_k4
        for j in 0..4 {
            blk[4 + j] = sc(j) | ((sc(j + 4) >> 4) << 6);
            blk[8 + j] = mn(j) | ((mn(j + 4) >> 4) << 6);
            blk[12 + j] = (sc(j + 4) & 0xF) | ((mn(j + 4) & 0xF) << 4);
        }
        for (e, &q) in q.iter().enumerate() {
            blk[16 + 32 * (e / 64) + e % 32] |= q << (4 * ((e / 32) % 2));
        }
    } else {
        blk[208..210].copy_from_slice(&tile[2 * i..2 * i + 2]);
        for g in 0..16 {
            blk[192 + g] = tile[K6_SC + 16 * g + i];
        }
        for (e, &q) in q.iter().enumerate() {
            let (half, l) = (e / 128, e % 32);
            let quarter = (e % 128) / 32;
            blk[64 * half + l + 32 * (quarter % 2)] |= (q & 0xF) << (4 * (quarter / 2));
            blk[128 + 32 * half + l] |= (q >> 4) << (2 * quarter);
        }
    }
}

/// Where the nibble vectors start in a tile.
fn nibbles_at(t: WType) -> usize {
    match t {
        WType::Q4_0 => 32,
        WType::Q4_1 => 64,
        _ => 96,
    }
}

/// The 32 unsigned codes of a ggml block, and its f16 scale (and min) bytes.
fn codes(t: WType, blk: &[u8]) -> [u8; 32] {
    let mut u = [0u8; 32];
    match t {
        WType::Q8_0 => {
            for e in 0..32 {
                u[e] = blk[2 + e] ^ 0x80;
            }
        }
        _ => {
            let qs = &blk[t.block_bytes() - 16..];
            let qh = if t == WType::Q5_0 { u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]) } else { 0 };
            for e in 0..16 {
                u[e] = (qs[e] & 0xF) | ((((qh >> e) & 1) as u8) << 4);
                u[e + 16] = (qs[e] >> 4) | ((((qh >> (e + 16)) & 1) as u8) << 4);
            }
        }
    }
    u
}

/// ggml matrix bytes -> packed bytes. `packable(t, rows, cols)` must hold. Groups of rows are
/// packed in parallel (a model's worth takes about a second on 2 cores).
pub fn pack(t: WType, rows: usize, cols: usize, ggml: &[u8]) -> Vec<u8> {
    assert!(packable(t, rows, cols) && ggml.len() == t.matrix_bytes(rows, cols));
    let (bb, nb, tb) = (t.block_bytes(), cols / t.block(), tile_bytes(t));
    let group_bytes = nb * tb;
    let mut out = vec![0u8; packed_len(t, rows, cols)];
    let pack_group = |g: usize, dst: &mut [u8]| {
        for (b, tile) in dst.chunks_exact_mut(tb).enumerate() {
            for i in 0..ROWS {
                let blk = &ggml[((g * ROWS + i) * nb + b) * bb..][..bb];
                if t.block() == 256 {
                    put_k(t, tile, i, blk);
                } else {
                    put32(t, tile, i, blk);
                }
            }
        }
    };
    let groups = rows / ROWS;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(groups);
    if threads <= 1 || ggml.len() < 1 << 20 {
        out.chunks_exact_mut(group_bytes).enumerate().for_each(|(g, dst)| pack_group(g, dst));
    } else {
        let per = groups.div_ceil(threads);
        std::thread::scope(|sc| {
            for (c, part) in out.chunks_mut(per * group_bytes).enumerate() {
                let pack_group = &pack_group;
                sc.spawn(move || part.chunks_exact_mut(group_bytes).enumerate().for_each(|(k, dst)| pack_group(c * per + k, dst)));
            }
        });
    }
    out
}

/// ggml 32-block of row `i` -> its place in a tile.
fn put32(t: WType, tile: &mut [u8], i: usize, blk: &[u8]) {
    tile[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
    if t == WType::Q4_1 {
        tile[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&blk[2..4]);
    }
    let u = codes(t, blk);
    if t == WType::Q8_0 {
        for j in 0..8 {
            tile[32 + 64 * j + 4 * i..][..4].copy_from_slice(&u[4 * j..4 * j + 4]);
        }
        return;
    }
    let nib = nibbles_at(t);
    for j in 0..4 {
        for c in 0..4 {
            tile[nib + 64 * j + 4 * i + c] = (u[4 * j + c] & 0xF) | ((u[4 * j + 16 + c] & 0xF) << 4);
        }
    }
    if t == WType::Q5_0 {
        // bits 4i..4i+4 of H_j: one half of byte i / 2
        for j in 0..8 {
            let h = (0..4).fold(0u8, |h, c| h | ((u[4 * j + c] >> 4) << c));
            tile[32 + 8 * j + i / 2] |= h << (4 * (i % 2));
        }
    }
}

/// The unsigned codes of row `i` (0..16) in a tile.
pub(crate) fn tile_codes(t: WType, tile: &[u8], i: usize) -> [u8; 32] {
    let mut u = [0u8; 32];
    for (e, v) in u.iter_mut().enumerate() {
        let (j, l) = (e / 4, 4 * i + e % 4);
        *v = match t {
            WType::Q8_0 => tile[32 + 64 * j + l],
            _ => {
                let n = tile[nibbles_at(t) + 64 * (j % 4) + l];
                let lo = if j < 4 { n & 0xF } else { n >> 4 };
                let hi = if t == WType::Q5_0 { (tile[32 + 8 * j + l / 8] >> (l % 8)) & 1 } else { 0 };
                lo | (hi << 4)
            }
        };
    }
    u
}

/// Packed bytes -> ggml matrix bytes (the exact inverse of [`pack`]).
pub fn unpack(t: WType, rows: usize, cols: usize, packed: &[u8]) -> Vec<u8> {
    let (bb, nb, tb) = (t.block_bytes(), cols / t.block(), tile_bytes(t));
    let mut out = vec![0u8; t.matrix_bytes(rows, cols)];
    for g in 0..rows / ROWS {
        for b in 0..nb {
            let tile = &packed[(g * nb + b) * tb..(g * nb + b + 1) * tb];
            for i in 0..ROWS {
                let blk = &mut out[((g * ROWS + i) * nb + b) * bb..][..bb];
                if t.block() == 256 {
                    get_k(t, tile, i, blk);
                    continue;
                }
                blk[0..2].copy_from_slice(&tile[2 * i..2 * i + 2]);
                let u = tile_codes(t, tile, i);
                match t {
                    WType::Q8_0 => {
                        for e in 0..32 {
                            blk[2 + e] = u[e] ^ 0x80;
                        }
                    }
                    _ => {
                        if t == WType::Q4_1 {
                            blk[2..4].copy_from_slice(&tile[32 + 2 * i..32 + 2 * i + 2]);
                        }
                        if t == WType::Q5_0 {
                            let qh = (0..32).fold(0u32, |h, e| h | (((u[e] >> 4) as u32) << e));
                            blk[2..6].copy_from_slice(&qh.to_le_bytes());
                        }
                        let qs = &mut blk[bb - 16..];
                        for e in 0..16 {
                            qs[e] = (u[e] & 0xF) | ((u[e + 16] & 0xF) << 4);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Reference kernel: `out[(m0 + r) * n + col0 + i] = dot(row i of the group, x[m0 + r])` for the
/// 16 rows of the group whose tiles are `tiles` (starting at output column `col0`) and the `mr`
/// activation rows from `m0`.
#[allow(clippy::too_many_arguments)]
pub fn dot_group(t: WType, tiles: &[u8], a: &QActs, m0: usize, mr: usize, out: &mut [f32], n: usize, col0: usize) {
    let tb = tile_bytes(t);
    for row in m0..m0 + mr {
        let mut acc = [0f32; ROWS];
        for (b, tile) in tiles.chunks_exact(tb).enumerate() {
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc += tile_row_dot(t, tile, i, a, row, b);
            }
        }
        out[row * n + col0..][..ROWS].copy_from_slice(&acc);
    }
}

/// Row `i` of a tile (block `b`) times the same block of activation row `row`, written out plainly.
fn tile_row_dot(t: WType, tile: &[u8], i: usize, a: &QActs, row: usize, b: usize) -> f32 {
    let bs = t.block();
    let e = row * (a.k / bs) + b;
    let x = &a.qs[row * a.k + b * bs..][..bs];
    let (dx, d) = (a.d[e], super::f16_at(tile, 2 * i));
    match t {
        WType::Q4K => {
            let q = k_codes(t, tile, i);
            let sums = &a.bsums[e * 16..][..16];
            let (mut isum, mut msum) = (0i32, 0i32);
            for s in 0..8 {
                let sub: i32 = (32 * s..32 * s + 32).map(|e| q[e] as i32 * x[e] as i32).sum();
                isum += tile[K4_SC + 16 * s + i] as i32 * sub;
                msum += tile[K4_MIN + 16 * s + i] as i32 * (sums[2 * s] as i32 + sums[2 * s + 1] as i32);
            }
            dx * (d * isum as f32 - super::f16_at(tile, K4_DMIN + 2 * i) * msum as f32)
        }
        WType::Q6K => {
            let q = k_codes(t, tile, i);
            let isum: i32 = (0..256).map(|e| tile[K6_SC + 16 * (e / 16) + i] as i8 as i32 * (q[e] as i32 - 32) * x[e] as i32).sum();
            d * dx * isum as f32
        }
        _ => {
            let sx: i32 = x.iter().map(|&v| v as i32).sum();
            let u = tile_codes(t, tile, i);
            let isum: i32 = u.iter().zip(x).map(|(&u, &x)| u as i32 * x as i32).sum::<i32>() - offset(t) * sx;
            let min = if t == WType::Q4_1 { super::f16_at(tile, 32 + 2 * i) * a.s[e] } else { 0.0 };
            d * dx * isum as f32 + min
        }
    }
}
