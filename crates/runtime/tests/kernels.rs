//! Quantized kernels against a straightforward dequantize-then-multiply reference, for every
//! supported type, with odd row counts, several x rows (tails of the 4-row groups) and thread splits.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use deepguard_runtime::kernels::{Isa, QActs, QMatrix, WType};

const TYPES: [(GgmlDType, usize); 6] =
    [(GgmlDType::Q8_0, 96), (GgmlDType::Q4_0, 160), (GgmlDType::Q4_1, 64), (GgmlDType::Q5_0, 224), (GgmlDType::Q4K, 512), (GgmlDType::Q6K, 768)];

/// Every implementation this CPU runs (scalar reference, AVX2, AVX-512 VNNI), so each SIMD path is
/// checked on machines that have it.
fn isas() -> Vec<Isa> {
    let v = Isa::available();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512bw") {
        assert!(v.contains(&Isa::Avx512), "the CPU has AVX-512 VNNI but its kernels are not offered: {v:?}");
    }
    v
}

fn random(rows: usize, cols: usize, seed: u64) -> Tensor {
    // heavy-tailed values, like real activations
    let mut s = seed;
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32 + 0.5) / (1u64 << 24) as f32 - 0.5;
            u * (1.0 + 8.0 * u * u)
        })
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

#[test]
fn every_type_matches_dequantize_then_multiply() {
    for (dt, k) in TYPES {
        for n in [1usize, 37, 130] {
            let wf = random(n, k, 11 + n as u64);
            let q = QTensor::quantize(&wf, dt).unwrap();
            let qm = QMatrix::from_qtensor(&q).unwrap().expect("supported type");
            let wd = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            for m in [1usize, 3, 4, 5, 8, 9, 10, 12, 13, 25] {
                let x = random(m, k, 5 + m as u64).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let acts = QActs::quantize(WType::from_ggml(dt).unwrap().act(), &x, m, k);
                for isa in isas() {
                    let mut out = vec![0f32; m * n];
                    qm.matmul(&x, m, &mut out, isa);
                    for r in 0..m {
                        let xr = acts.dequantize_row(r);
                        for c in 0..n {
                            let (mut reference, mag): (f64, f64) = wd[c].iter().zip(&xr).fold((0.0, 0.0), |(s, a), (&w, &x)| (s + w as f64 * x as f64, a + (w * x).abs() as f64));
                            if dt == GgmlDType::Q4_1 {
                                // ggml's Q8_1 stores each block's sum s = d * sum(q) in f16 and the
                                // min term uses it: swap m * sum(x) for m * s in the reference.
                                let bytes = q.data().unwrap();
                                for b in 0..k / 32 {
                                    let off = (c * k / 32 + b) * 20;
                                    let mb = half::f16::from_le_bytes([bytes[off + 2], bytes[off + 3]]).to_f32() as f64;
                                    let exact: f64 = xr[b * 32..(b + 1) * 32].iter().map(|&v| v as f64).sum();
                                    reference += mb * (acts.s[r * k / 32 + b] as f64 - exact);
                                }
                            }
                            let got = out[r * n + c] as f64;
                            assert!(
                                (got - reference).abs() <= 1e-5 * mag + 1e-6,
                                "{dt:?} {isa:?} n={n} m={m} [{r},{c}]: {got} vs reference {reference} (scale {mag})"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_type_matches_candle_qmatmul() {
    for (dt, k) in TYPES {
        let q = QTensor::quantize(&random(45, k, 3), dt).unwrap();
        let qm = QMatrix::from_qtensor(&q).unwrap().unwrap();
        let x = random(6, k, 9);
        let ours = qm.forward(&x).unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
        let d = (&ours - &theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let s = theirs.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d <= 1e-4 * s.max(1.0), "{dt:?}: max diff {d} (scale {s})");
    }
}

/// `tested` with `isa` against `reference` with the scalar kernels, on `m` rows of `x`.
fn agrees_with_scalar(reference: &QMatrix, tested: &QMatrix, x: &[f32], m: usize, isa: Isa, what: &str) {
    let n = reference.rows;
    let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
    reference.matmul(x, m, &mut a, Isa::Scalar);
    tested.matmul(x, m, &mut b, isa);
    for (i, (u, v)) in a.iter().zip(&b).enumerate() {
        assert!((u - v).abs() <= 1e-4 * u.abs().max(1.0), "{what} [{i}]: scalar {u} vs {v}");
    }
}

#[test]
fn simd_and_scalar_agree_on_large_shapes() {
    // big enough for several threads and weight-row tiles
    for isa in isas().into_iter().skip(1) {
        for (dt, k) in [(GgmlDType::Q5_0, 896), (GgmlDType::Q8_0, 896), (GgmlDType::Q4K, 1024), (GgmlDType::Q6K, 1024)] {
            let q = QTensor::quantize(&random(333, k, 1), dt).unwrap();
            let qm = QMatrix::from_qtensor(&q).unwrap().unwrap();
            // 40 rows: several row groups, and an input big enough to be quantized in parallel
            let x = random(40, k, 2).flatten_all().unwrap().to_vec1::<f32>().unwrap();
            agrees_with_scalar(&qm, &qm, &x, 40, isa, &format!("{dt:?} {isa:?}"));
        }
    }
}

#[test]
fn wrong_sizes_are_refused() {
    assert!(QMatrix::from_bytes(WType::Q8_0, 2, 33, vec![0; 68]).is_err());
    assert!(QMatrix::from_bytes(WType::Q8_0, 2, 32, vec![0; 67]).is_err());
    let q = QTensor::quantize(&random(4, 64, 1), GgmlDType::Q8_0).unwrap();
    let qm = QMatrix::from_qtensor(&q).unwrap().unwrap();
    assert!(qm.forward(&random(2, 32, 1)).is_err());
}

/// The interleaved layout: every type, row counts that are whole 16-row groups (one,
/// three, ten groups), every row count of x, every ISA; and packing is exactly reversible.
#[test]
fn packed_layout_matches_dequantize_then_multiply() {
    for (dt, k) in TYPES {
        for n in [16usize, 48, 160] {
            let q = QTensor::quantize(&random(n, k, 31 + n as u64), dt).unwrap();
            let plain = QMatrix::from_qtensor(&q).unwrap().unwrap();
            let qm = plain.clone().packed();
            assert!(qm.is_packed() && !plain.is_packed());
            let extra = if dt == GgmlDType::Q4K { n / 16 * k / 256 * 64 } else { 0 };
            assert_eq!(qm.bytes().len(), plain.bytes().len() + extra, "{dt:?}: packed size");
            assert_ne!(qm.bytes(), plain.bytes(), "{dt:?}: packing reorders the bytes");
            assert_eq!(&*qm.to_qtensor().unwrap().data().unwrap(), plain.bytes(), "{dt:?} n={n}: unpacking restores the GGUF bytes");
            let wd = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            for m in [1usize, 2, 5, 10, 12, 13, 25] {
                let x = random(m, k, 7 + m as u64).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let acts = QActs::quantize(WType::from_ggml(dt).unwrap().act(), &x, m, k);
                let mut ggml = vec![0f32; m * n];
                plain.matmul(&x, m, &mut ggml, Isa::Scalar);
                for isa in isas() {
                    let mut out = vec![0f32; m * n];
                    qm.matmul(&x, m, &mut out, isa);
                    for r in 0..m {
                        let xr = acts.dequantize_row(r);
                        for c in 0..n {
                            let mag: f64 = wd[c].iter().zip(&xr).map(|(&w, &x)| (w * x).abs() as f64).sum();
                            let (got, want) = (out[r * n + c] as f64, ggml[r * n + c] as f64);
                            // the GGUF-layout scalar kernel is itself checked against the reference above
                            assert!((got - want).abs() <= 1e-5 * mag + 1e-6, "{dt:?} packed {isa:?} n={n} m={m} [{r},{c}]: {got} vs {want} (scale {mag})");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn only_whole_groups_of_16_rows_are_packed() {
    for (dt, k, n, want) in [(GgmlDType::Q8_0, 64, 17, false), (GgmlDType::Q8_0, 64, 32, true), (GgmlDType::Q4K, 256, 32, true), (GgmlDType::Q6K, 256, 24, false)] {
        let q = QTensor::quantize(&random(n, k, 1), dt).unwrap();
        let qm = QMatrix::from_qtensor(&q).unwrap().unwrap().packed();
        assert_eq!(qm.is_packed(), want, "{dt:?} {n}x{k}");
        // a matrix that stays in the GGUF layout still multiplies correctly
        let x = random(3, k, 2);
        let theirs = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
        let d = (&qm.forward(&x).unwrap() - &theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d <= 1e-3, "{dt:?} {n}x{k}: diff {d}");
    }
}

#[test]
fn packed_simd_and_scalar_agree_on_large_shapes() {
    // several threads, chunks and x-row groups, and the prefetch running past the matrix end
    for isa in isas().into_iter().skip(1) {
        for dt in [GgmlDType::Q5_0, GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q4K, GgmlDType::Q6K] {
            let (n, k) = (336, if dt.block_size() == 256 { 1024 } else { 896 });
            let q = QTensor::quantize(&random(n, k, 1), dt).unwrap();
            let plain = QMatrix::from_qtensor(&q).unwrap().unwrap();
            let qm = plain.clone().packed();
            let x = random(40, k, 2).flatten_all().unwrap().to_vec1::<f32>().unwrap();
            agrees_with_scalar(&plain, &qm, &x, 40, isa, &format!("{dt:?} packed {isa:?}"));
        }
    }
}

#[test]
fn large_matrices_pack_in_parallel_and_round_trip() {
    // over 1 MB: packed by several threads, each taking whole 16-row groups
    for (dt, n, k) in [(GgmlDType::Q8_0, 1040, 1024), (GgmlDType::Q6K, 640, 2048)] {
        let q = QTensor::quantize(&random(n, k, 4), dt).unwrap();
        let plain = QMatrix::from_qtensor(&q).unwrap().unwrap();
        assert!(plain.bytes().len() > 1 << 20);
        let qm = QMatrix::from_qtensor_for(&q, Isa::Avx512).unwrap().unwrap();
        assert!(qm.is_packed(), "{dt:?}");
        assert_eq!(&*qm.to_qtensor().unwrap().data().unwrap(), plain.bytes(), "{dt:?}");
    }
}

/// Random GGUF bytes for a K-quant matrix rather than quantized floats: every code, scale and
/// min pattern occurs, and a quarter of the super-blocks carry the extreme scales (Q4_K's 6-bit
/// scales and mins all 63, Q6_K's scales all -128 or all 127), where integer sums are largest.
fn random_kquant_bytes(t: WType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let (bb, nb) = (t.block_bytes(), cols / 256);
    let mut data: Vec<u8> = (0..rows * nb * bb).map(|_| next() as u8).collect();
    for blk in data.chunks_exact_mut(bb) {
        // finite scales of either sign, 2^-14 .. 2^-4 in magnitude
        let scale = |r: u32| {
            let v = (r % 1000 + 1) as f32 / 1000.0 / 16.0 * if r & (1 << 20) == 0 { 1.0 } else { -1.0 };
            half::f16::from_f32(v).to_le_bytes()
        };
        let extreme = next() % 4;
        if t == WType::Q4K {
            blk[0..2].copy_from_slice(&scale(next()));
            blk[2..4].copy_from_slice(&scale(next()));
            if extreme == 0 {
                blk[4..16].fill(0xFF);
            }
        } else {
            blk[208..210].copy_from_slice(&scale(next()));
            match extreme {
                0 => blk[192..208].fill(0x80),
                1 => blk[192..208].fill(0x7F),
                _ => {}
            }
        }
    }
    data
}

/// The K-quant SIMD kernels (interleaved layout) against the scalar GGUF-layout reference on
/// random blocks and shapes: rows of 1 to 10 groups of 16, 256 to 2304 columns, 1 to 25 activation
/// rows (every group size and remainder of both ISAs), activations of full range and rows of one
/// sign (the largest 16-value sums).
#[test]
fn kquant_kernels_match_the_reference_on_random_blocks_and_shapes() {
    let mut case = 0u64;
    for t in [WType::Q4K, WType::Q6K] {
        for (rows, cols) in [(16usize, 256usize), (32, 1536), (48, 512), (160, 2304), (64, 768)] {
            case += 1;
            let bytes = random_kquant_bytes(t, rows, cols, 1000 + case);
            let plain = QMatrix::from_bytes(t, rows, cols, bytes.clone()).unwrap();
            let packed = plain.clone().packed();
            assert!(packed.is_packed());
            assert_eq!(&*packed.to_qtensor().unwrap().data().unwrap(), &bytes[..], "{t:?} {rows}x{cols}: unpacking restores the bytes");
            let wd = plain.dequantize().unwrap().to_vec2::<f32>().unwrap();
            for m in [1usize, 2, 3, 4, 5, 7, 8, 11, 12, 13, 25] {
                let mut x = random(m, cols, case * 100 + m as u64).flatten_all().unwrap().to_vec1::<f32>().unwrap();
                // the first row all positive, the last all negative: every 16-value sum at +-16 * 127
                for v in &mut x[..cols] {
                    *v = v.abs() + 1.0;
                }
                if m > 1 {
                    for v in &mut x[(m - 1) * cols..] {
                        *v = -v.abs() - 1.0;
                    }
                }
                let acts = QActs::quantize(t.act(), &x, m, cols);
                let mut want = vec![0f32; m * rows];
                plain.matmul(&x, m, &mut want, Isa::Scalar);
                for isa in isas().into_iter().skip(1) {
                    let mut got = vec![0f32; m * rows];
                    packed.matmul(&x, m, &mut got, isa);
                    for r in 0..m {
                        let xr = acts.dequantize_row(r);
                        for c in 0..rows {
                            let mag: f64 = wd[c].iter().zip(&xr).map(|(&w, &x)| (w * x).abs() as f64).sum();
                            let (g, w) = (got[r * rows + c] as f64, want[r * rows + c] as f64);
                            assert!((g - w).abs() <= 1e-5 * mag + 1e-6, "{t:?} {isa:?} {rows}x{cols} m={m} [{r},{c}]: {g} vs scalar {w} (scale {mag})");
                        }
                    }
                }
            }
        }
    }
}

/// The kernel pool's caller never waits for a worker that has not started on the job (on a busy
/// machine the scheduler may not run it for a whole time slice): with the worker held back, the
/// job still completes on the caller alone, and the worker, once let go, does not run the closed
/// job. With candle's barrier pool the call would block until the worker ran.
#[test]
fn kernel_pool_does_not_wait_for_a_worker_that_has_not_started() {
    use deepguard_runtime::kernels::pool::Pool;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let pool = Arc::new(Pool::with_gate(1, gate.clone()));
    assert_eq!(pool.threads(), 2);
    let calls = Arc::new(AtomicUsize::new(0));
    let items = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    {
        let (pool, calls, items) = (pool.clone(), calls.clone(), items.clone());
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            pool.run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                while next.fetch_add(1, Ordering::SeqCst) < 1000 {
                    items.fetch_add(1, Ordering::SeqCst);
                }
            });
            tx.send(()).unwrap();
        });
    }
    rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the pool waited for a worker that never started on the job");
    assert_eq!(items.load(Ordering::SeqCst), 1000, "every work item ran once");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "only the caller ran the job");
    drop(held);
    // the worker, now free, skips the closed job and takes part in the next one without harm
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    for _ in 0..200 {
        next.store(0, Ordering::SeqCst);
        pool.run(|| {
            while next.fetch_add(1, Ordering::SeqCst) < 64 {
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    assert_eq!(done.load(Ordering::SeqCst), 200 * 64);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the closed job was not run late");
}

/// A panic inside a job reaches the caller, and the pool still works afterwards.
#[test]
fn kernel_pool_passes_a_panic_to_the_caller() {
    use deepguard_runtime::kernels::pool::Pool;
    let pool = Pool::new(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(|| panic!("boom"))));
    assert!(r.is_err());
    let n = std::sync::atomic::AtomicUsize::new(0);
    pool.run(|| {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    assert!((1..=2).contains(&n.load(std::sync::atomic::Ordering::SeqCst)));
}
