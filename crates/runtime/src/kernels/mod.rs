//! Quantized matrix multiplication for the GGUF types our models use.
//!
//! `y = x W^T` with W quantized (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) and x f32. As in ggml, x is
//! first quantized to 8 bits (Q8_0 blocks of 32 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1, Q8_K blocks of
//! 256 for the K-quants), then every block product is an exact integer dot product scaled in f32.
//! Quantizing x exactly as ggml/candle do keeps our logits equal to theirs up to float summation
//! order.
//!
//! Work is split over output rows across candle's thread pool. Several rows of x (prefill, batched
//! decoding) are processed together so that each weight block is loaded and unpacked once per
//! group of up to 4 rows. The SIMD path (AVX2) is chosen at run time; the scalar path is the
//! reference the tests compare against.

mod act;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
}

impl Isa {
    /// The best available on this CPU (`DEEPGUARD_KERNELS=scalar` forces the reference path);
    /// decided once per process.
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(Isa::probe)
    }

    fn probe() -> Isa {
        if std::env::var("DEEPGUARD_KERNELS").is_ok_and(|v| v == "scalar") {
            return Isa::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
        Isa::Scalar
    }
}

/// A quantized weight matrix (rows = outputs, cols = inputs) in its GGUF byte layout.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub wtype: WType,
    pub rows: usize,
    pub cols: usize,
    data: std::sync::Arc<Vec<u8>>,
}

impl QMatrix {
    /// Takes the bytes of a GGUF tensor of shape (rows, cols); `None` if the type has no kernel.
    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        let Some(wtype) = WType::from_ggml(q.dtype()) else { return Ok(None) };
        let (rows, cols) = q.shape().dims2()?;
        if cols % wtype.block() != 0 {
            return Ok(None);
        }
        let data = q.data()?.into_owned();
        Self::from_bytes(wtype, rows, cols, data).map(Some)
    }

    pub fn from_bytes(wtype: WType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if cols % wtype.block() != 0 {
            bail!("{wtype:?} matrix with {cols} columns: not a multiple of the block size {}", wtype.block());
        }
        let want = rows * cols / wtype.block() * wtype.block_bytes();
        if data.len() != want {
            bail!("{wtype:?} matrix {rows}x{cols} needs {want} bytes, got {}", data.len());
        }
        Ok(Self { wtype, rows, cols, data: std::sync::Arc::new(data) })
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / self.wtype.block() * self.wtype.block_bytes()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The same matrix as a candle `QTensor` (used to dequantize).
    pub fn to_qtensor(&self) -> Result<QTensor> {
        let storage = QStorage::from_data(Cow::Borrowed(&self.data[..]), &Device::Cpu, self.wtype.ggml())?;
        Ok(QTensor::new(storage, (self.rows, self.cols))?)
    }

    pub fn dequantize(&self) -> Result<Tensor> {
        Ok(self.to_qtensor()?.dequantize(&Device::Cpu)?)
    }

    /// `x` (..., cols) f32 -> (..., rows).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.cols {
            bail!("matmul: input has {k} features, weight expects {}", self.cols);
        }
        let m = x.elem_count() / k.max(1);
        let xv = x.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; m * self.rows];
        self.matmul(&xv, m, &mut out, Isa::detect());
        let mut od = dims;
        *od.last_mut().unwrap() = self.rows;
        Ok(Tensor::from_vec(out, od, x.device())?)
    }

    /// out[m][n] = dot(W[n], x[m]) for x of m rows, multi-threaded.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], isa: Isa) {
        assert_eq!(x.len(), m * self.cols);
        assert_eq!(out.len(), m * self.rows);
        let acts = QActs::quantize(self.wtype.act(), x, m, self.cols);
        let pool = candle_core::utils::barrier_pool();
        let threads = pool.n_workers() + 1;
        let n = self.rows;
        // Static row ranges, aligned to 8 rows; small matrices run on fewer threads.
        let min_rows_per_thread = 16;
        let used = threads.min(n.div_ceil(min_rows_per_thread)).max(1);
        let chunk = n.div_ceil(used).div_ceil(8) * 8;
        let out_ptr = SendPtr(out.as_mut_ptr());
        let work = |tid: usize| {
            let lo = tid * chunk;
            if lo >= n {
                return;
            }
            let hi = n.min(lo + chunk);
            // SAFETY: each thread writes only columns lo..hi of every output row.
            let out = unsafe { std::slice::from_raw_parts_mut(out_ptr.get(), m * n) };
            self.matmul_rows(&acts, lo..hi, out, isa);
        };
        if used == 1 {
            work(0);
        } else {
            pool.execute(work);
        }
    }

    fn matmul_rows(&self, acts: &QActs, rows: std::ops::Range<usize>, out: &mut [f32], isa: Isa) {
        let m = acts.m;
        let n = self.rows;
        let rb = self.row_bytes();
        // Tile: a band of weight rows stays in cache while all groups of 4 x-rows pass over it.
        const NT: usize = 32;
        let mut tile_lo = rows.start;
        while tile_lo < rows.end {
            let tile_hi = rows.end.min(tile_lo + NT);
            let mut m0 = 0;
            while m0 < m {
                let mr = (m - m0).min(4);
                for r in tile_lo..tile_hi {
                    let w = &self.data[r * rb..(r + 1) * rb];
                    let mut res = [0f32; 4];
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => unsafe { avx2::dot_rows(self.wtype, w, acts, m0, mr, &mut res) },
                        _ => scalar::dot_rows(self.wtype, w, acts, m0, mr, &mut res),
                    }
                    for i in 0..mr {
                        out[(m0 + i) * n + r] = res[i];
                    }
                }
                m0 += mr;
            }
            tile_lo = tile_hi;
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
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
