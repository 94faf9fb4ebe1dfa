//! Quantized matrix multiplication for the GGUF types our models use.
//!
//! `y = x W^T` with W quantized (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) and x f32. As in ggml, x is
//! first quantized to 8 bits (Q8_0 blocks of 32 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1, Q8_K blocks of
//! 256 for the K-quants), then every block product is an exact integer dot product scaled in f32.
//! Quantizing x exactly as ggml/candle do keeps our logits equal to theirs up to float summation
//! order.
//!
//! Work is split over output rows across the kernels' thread pool ([`pool`]). Several rows of x (prefill, batched
//! decoding) are processed together so that each weight block is loaded and unpacked once per
//! group of up to 4 rows (12 with AVX-512). The SIMD path (AVX-512 with VNNI, else AVX2) is chosen
//! at run time; the scalar path is the reference the tests compare against. For the SIMD paths
//! matrices are stored interleaved, 16 rows at a time ([`packed`]), so that one instruction
//! advances 8 or 16 output rows.

mod act;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod packed;
pub mod pool;
mod scalar;
pub mod vmath;

pub use act::{ActKind, QActs};
use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use std::borrow::Cow;

/// Weight formats with native kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl WType {
    pub fn from_ggml(d: GgmlDType) -> Option<Self> {
        Some(match d {
            GgmlDType::Q4_0 => WType::Q4_0,
            GgmlDType::Q4_1 => WType::Q4_1,
            GgmlDType::Q5_0 => WType::Q5_0,
            GgmlDType::Q8_0 => WType::Q8_0,
            GgmlDType::Q4K => WType::Q4K,
            GgmlDType::Q6K => WType::Q6K,
            _ => return None,
        })
    }
    pub fn ggml(self) -> GgmlDType {
        match self {
            WType::Q4_0 => GgmlDType::Q4_0,
            WType::Q4_1 => GgmlDType::Q4_1,
            WType::Q5_0 => GgmlDType::Q5_0,
            WType::Q8_0 => GgmlDType::Q8_0,
            WType::Q4K => GgmlDType::Q4K,
            WType::Q6K => GgmlDType::Q6K,
        }
    }
    /// Elements per weight block.
    pub fn block(self) -> usize {
        match self {
            WType::Q4K | WType::Q6K => 256,
            _ => 32,
        }
    }
    /// Bytes per weight block.
    /// Bytes of a `rows` x `cols` matrix in the GGUF layout.
    pub fn matrix_bytes(self, rows: usize, cols: usize) -> usize {
        rows * cols / self.block() * self.block_bytes()
    }
    pub fn block_bytes(self) -> usize {
        match self {
            WType::Q4_0 => 18,
            WType::Q4_1 => 20,
            WType::Q5_0 => 22,
            WType::Q8_0 => 34,
            WType::Q4K => 144,
            WType::Q6K => 210,
        }
    }
    pub fn act(self) -> ActKind {
        match self {
            WType::Q4_1 => ActKind::Q8_1,
            WType::Q4K | WType::Q6K => ActKind::Q8K,
            _ => ActKind::Q8_0,
        }
    }
}

/// Which implementation runs the dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    /// AVX-512 F/BW/VL with VNNI.
    Avx512,
}

/// Most activation rows one kernel call handles (the group size of the widest ISA).
pub(crate) const MAX_GROUP: usize = 12;

impl Isa {
    /// The best available on this CPU (`DEEPGUARD_KERNELS=scalar|avx2` caps it); decided once
    /// per process.
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let all = Isa::available();
            let cap = match std::env::var("DEEPGUARD_KERNELS").as_deref() {
                Ok("scalar") => Isa::Scalar,
                Ok("avx2") => Isa::Avx2,
                _ => Isa::Avx512,
            };
            all.into_iter().filter(|&i| i <= cap).max().unwrap_or(Isa::Scalar)
        })
    }

    /// Every implementation this CPU can run, reference first (tests check them all).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                v.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    v.push(Isa::Avx512);
                }
            }
        }
        v
    }

    /// Activation rows handled per pass over a weight row.
    pub fn group(self) -> usize {
        match self {
            Isa::Avx512 => MAX_GROUP,
            _ => 4,
        }
    }
}

/// A quantized weight matrix (rows = outputs, cols = inputs): in its GGUF byte layout, or (see
/// [`packed`]) with every 16 rows interleaved for the SIMD kernels.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub wtype: WType,
    pub rows: usize,
    pub cols: usize,
    packed: bool,
    data: std::sync::Arc<Vec<u8>>,
}

impl QMatrix {
    /// Takes the bytes of a GGUF tensor of shape (rows, cols); `None` if the type has no kernel.
    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        Self::from_qtensor_for(q, Isa::Scalar)
    }

    /// [`from_qtensor`](Self::from_qtensor) in the layout the kernels of `isa` want: with AVX2 or
    /// AVX-512, matrices whose row count is a multiple of 16 are interleaved ([`packed`]). Copies
    /// the bytes once.
    pub fn from_qtensor_for(q: &QTensor, isa: Isa) -> Result<Option<Self>> {
        let Some(wtype) = WType::from_ggml(q.dtype()) else { return Ok(None) };
        let (rows, cols) = q.shape().dims2()?;
        if cols % wtype.block() != 0 {
            return Ok(None);
        }
        let bytes = q.data()?;
        if isa >= Isa::Avx2 && packed::packable(wtype, rows, cols) && bytes.len() == wtype.matrix_bytes(rows, cols) {
            return Ok(Some(Self::interleaved(wtype, rows, cols, &bytes)));
        }
        Self::from_bytes(wtype, rows, cols, bytes.into_owned()).map(Some)
    }

    pub fn from_bytes(wtype: WType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if cols % wtype.block() != 0 {
            bail!("{wtype:?} matrix with {cols} columns: not a multiple of the block size {}", wtype.block());
        }
        let want = wtype.matrix_bytes(rows, cols);
        if data.len() != want {
            bail!("{wtype:?} matrix {rows}x{cols} needs {want} bytes, got {}", data.len());
        }
        Ok(Self { wtype, rows, cols, packed: false, data: std::sync::Arc::new(data) })
    }

    /// The matrix in the interleaved layout, if its type and shape allow it (else unchanged).
    pub fn packed(self) -> Self {
        if self.packed || !packed::packable(self.wtype, self.rows, self.cols) {
            return self;
        }
        Self::interleaved(self.wtype, self.rows, self.cols, &self.data)
    }

    /// A packed matrix from GGUF bytes (`packed::packable` holds).
    fn interleaved(wtype: WType, rows: usize, cols: usize, ggml: &[u8]) -> Self {
        Self { wtype, rows, cols, packed: true, data: std::sync::Arc::new(packed::pack(wtype, rows, cols, ggml)) }
    }

    pub fn is_packed(&self) -> bool {
        self.packed
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / self.wtype.block() * self.wtype.block_bytes()
    }

    /// The stored bytes (GGUF layout, or interleaved: the same size, K-quants 2.8% more).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The same matrix as a candle `QTensor` (used to dequantize).
    pub fn to_qtensor(&self) -> Result<QTensor> {
        let bytes = if self.packed { Cow::Owned(packed::unpack(self.wtype, self.rows, self.cols, &self.data)) } else { Cow::Borrowed(&self.data[..]) };
        let storage = QStorage::from_data(bytes, &Device::Cpu, self.wtype.ggml())?;
        Ok(QTensor::new(storage, (self.rows, self.cols))?)
    }

    pub fn dequantize(&self) -> Result<Tensor> {
        Ok(self.to_qtensor()?.dequantize(&Device::Cpu)?)
    }

    /// `x` (..., cols) f32 -> (..., rows).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(forward_many(&[self], x)?.pop().unwrap())
    }

    /// out[m][n] = dot(W[n], x[m]) for x of m rows, multi-threaded.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], isa: Isa) {
        matmul_many(&[self], x, m, &mut [out], isa)
    }

    fn matmul_rows(&self, acts: &QActs, rows: std::ops::Range<usize>, out: &mut [f32], isa: Isa) {
        if self.packed {
            return self.matmul_packed(acts, rows, out, isa);
        }
        let m = acts.m;
        let n = self.rows;
        let rb = self.row_bytes();
        // Tile: a band of weight rows stays in cache while all groups of x rows pass over it.
        const NT: usize = 32;
        // Software prefetch ~4 KiB ahead in the weight stream: with the hardware prefetcher
        // alone a streamed matrix (the 136 MB output head) ran at half the memory bandwidth.
        let pf_rows = if isa == Isa::Scalar || prefetch_bytes() == 0 { 0 } else { prefetch_bytes().div_ceil(rb) };
        let mut tile_lo = rows.start;
        while tile_lo < rows.end {
            let tile_hi = rows.end.min(tile_lo + NT);
            // groups of nearly equal size (AVX2, 10 rows: 4 + 3 + 3, not 4 + 4 + 2)
            let groups = m.div_ceil(isa.group());
            for g in 0..groups {
                let (m0, m1) = (g * m / groups, (g + 1) * m / groups);
                let mr = m1 - m0;
                for r in tile_lo..tile_hi {
                    if g == 0 && pf_rows > 0 {
                        prefetch_ahead(self.data.as_ptr().wrapping_add(r * rb), rb, pf_rows * rb);
                    }
                    let w = &self.data[r * rb..(r + 1) * rb];
                    let mut res = [0f32; MAX_GROUP];
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => unsafe { avx512::dot_rows(self.wtype, w, acts, m0, mr, &mut res) },
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => unsafe { avx2::dot_rows(self.wtype, w, acts, m0, mr, &mut res) },
                        _ => scalar::dot_rows(self.wtype, w, acts, m0, mr, &mut res),
                    }
                    for i in 0..mr {
                        out[(m0 + i) * n + r] = res[i];
                    }
                }
            }
            tile_lo = tile_hi;
        }
    }

    /// `matmul_rows` for the interleaved layout: `rows` is a whole number of 16-row groups. Each
    /// group's tiles (10-55 KB at our shapes) stay in cache while all groups of x rows pass.
    fn matmul_packed(&self, acts: &QActs, rows: std::ops::Range<usize>, out: &mut [f32], isa: Isa) {
        debug_assert!(rows.start % packed::ROWS == 0 && rows.end % packed::ROWS == 0);
        let (m, n) = (acts.m, self.rows);
        let group_bytes = self.cols / self.wtype.block() * packed::tile_bytes(self.wtype);
        let pf = if isa == Isa::Scalar { 0 } else { prefetch_bytes() };
        let groups = m.div_ceil(isa.group());
        for g in rows.start / packed::ROWS..rows.end / packed::ROWS {
            let tiles = &self.data[g * group_bytes..(g + 1) * group_bytes];
            for ag in 0..groups {
                let (m0, m1) = (ag * m / groups, (ag + 1) * m / groups);
                match isa {
                    // SAFETY: AVX-512 is present (Isa), `tiles` is group g, out holds m rows of n.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512::packed_rows(self.wtype, tiles, acts, m0, m1 - m0, out, n, g * packed::ROWS, if ag == 0 { pf } else { 0 }) },
                    // SAFETY: AVX2 is present (Isa), `tiles` is group g, out holds m rows of n.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2::packed_rows(self.wtype, tiles, acts, m0, m1 - m0, out, n, g * packed::ROWS, if ag == 0 { pf } else { 0 }) },
                    _ => packed::dot_group(self.wtype, tiles, acts, m0, m1 - m0, out, n, g * packed::ROWS),
                }
            }
        }
    }
}

/// `x` (..., cols) through several matrices with the same input (q/k/v, gate/up): one copy and
/// one quantization of the input per activation format, one pass over the thread pool.
pub fn forward_many(mats: &[&QMatrix], x: &Tensor) -> Result<Vec<Tensor>> {
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    if let Some(w) = mats.iter().find(|w| w.cols != k) {
        bail!("matmul: input has {k} features, weight expects {}", w.cols);
    }
    let m = x.elem_count() / k.max(1);
    let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.rows]).collect();
    with_cpu_f32(&[&x], |xs| {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        matmul_many(mats, xs[0], m, &mut refs, Isa::detect());
    })?
    .ok_or_else(|| anyhow::anyhow!("quantized kernels run on the CPU"))?;
    outs.into_iter()
        .zip(mats)
        .map(|(o, w)| {
            let mut od = dims.clone();
            *od.last_mut().unwrap() = w.rows;
            Ok(Tensor::from_vec(o, od, x.device())?)
        })
        .collect()
}

/// Runs `f` on the f32 contents of CPU tensors with contiguous layouts; `None` (nothing run) for
/// any other device, dtype or layout.
pub(crate) fn with_cpu_f32<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Result<Option<R>> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (t, (st, layout)) in ts.iter().zip(&guards) {
        let (candle_core::Storage::Cpu(cpu), true, candle_core::DType::F32) = (&**st, layout.is_contiguous(), t.dtype()) else { return Ok(None) };
        let o = layout.start_offset();
        slices.push(&cpu.as_slice::<f32>()?[o..o + t.elem_count()]);
    }
    Ok(Some(f(&slices)))
}

/// outs[i][m][n] = dot(W_i[n], x[m]) for every matrix W_i (all with x's column count).
///
/// The rows of all matrices are cut into chunks that the threads take from a shared counter, so
/// a thread slowed by other work on the machine does not hold the others at the barrier.
pub fn matmul_many(mats: &[&QMatrix], x: &[f32], m: usize, outs: &mut [&mut [f32]], isa: Isa) {
    let t0 = crate::profile::enabled().then(std::time::Instant::now);
    assert_eq!(mats.len(), outs.len());
    let k = mats.first().map_or(0, |w| w.cols);
    assert_eq!(x.len(), m * k);
    for (w, o) in mats.iter().zip(outs.iter()) {
        assert_eq!(w.cols, k);
        assert_eq!(o.len(), m * w.rows);
    }
    // one quantized copy of x per activation format
    let mut acts: Vec<QActs> = Vec::new();
    let act_of: Vec<usize> = mats
        .iter()
        .map(|w| match acts.iter().position(|a| a.kind == w.wtype.act()) {
            Some(i) => i,
            None => {
                acts.push(QActs::quantize(w.wtype.act(), x, m, k));
                acts.len() - 1
            }
        })
        .collect();
    let pool = pool::global();
    let threads = pool.threads();
    let total: usize = mats.iter().map(|w| w.rows).sum();
    // ~6 chunks per thread, multiples of 16 rows (whole interleaved groups)
    let chunk = (total.div_ceil(threads * 6).div_ceil(16) * 16).max(16);
    // chunk list: (matrix, first row); chunks never straddle two matrices
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    for (i, w) in mats.iter().enumerate() {
        chunks.extend((0..w.rows).step_by(chunk).map(|r| (i, r)));
    }
    let out_ptrs: Vec<SendPtr<f32>> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || loop {
        let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&(i, lo)) = chunks.get(c) else { return };
        let w = mats[i];
        let hi = w.rows.min(lo + chunk);
        // SAFETY: each chunk writes only columns lo..hi of every output row of matrix i.
        let out = unsafe { std::slice::from_raw_parts_mut(out_ptrs[i].get(), m * w.rows) };
        w.matmul_rows(&acts[act_of[i]], lo..hi, out, isa);
    };
    if threads == 1 || chunks.len() == 1 {
        work();
    } else {
        pool.run(work);
    }
    if let Some(t0) = t0 {
        crate::profile::add_kernel(t0);
    }
}

/// How far ahead in the weight stream to prefetch: `DEEPGUARD_PREFETCH=<bytes>` (0 turns it off);
/// 4 KiB by default (how that was chosen, and what it gains: docs/speed.md, round 1).
fn prefetch_bytes() -> usize {
    static ON: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DEEPGUARD_PREFETCH").ok().and_then(|v| v.parse().ok()).unwrap_or(4096))
}

/// Asks for the cache lines of the `len` bytes that start `dist` bytes after `p` to be loaded
/// (nothing if `dist` is 0): the weight stream read ahead of the kernels. A prefetch is a hint and
/// cannot fault, so the range may run past the end of the matrix.
#[inline(always)]
pub(crate) fn prefetch_ahead(p: *const u8, len: usize, dist: usize) {
    #[cfg(target_arch = "x86_64")]
    if dist > 0 {
        let mut off = 0;
        while off < len {
            // SAFETY: a prefetch does not access memory architecturally; wrapping_add keeps the
            // pointer arithmetic defined past the allocation.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(dist + off) as *const i8) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len, dist);
}

/// A raw pointer that threads of the pool may share; each use says which part it alone writes.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    // a method, so that closures capture the wrapper rather than the raw pointer field
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// 6-bit scale and min of sub-block `j` of a Q4_K block (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}
