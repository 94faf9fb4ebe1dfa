//! Quantized matmul throughput per weight format at the shapes of Qwen2.5-Coder-0.5B and -1.5B:
//! `cargo bench -p deepguard-runtime --bench kernels [FILTER]` (FILTER: a type such as `Q4K`, or
//! `vmath`). Prints weight bandwidth (GB/s) for one activation row (decode) and multiply-adds per
//! second for 10 rows (batched decoding) and 128 rows (prefill), per ISA and layout.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use deepguard_runtime::kernels::{Isa, QMatrix, WType};
use std::time::Instant;

/// Seconds per call of `f`: wall time, or with `DEEPGUARD_BENCH_CLOCK=cpu` the calling thread's
/// CPU time, which a busy machine disturbs far less (meaningful with `CANDLE_NUM_THREADS=1`, where
/// the kernels run on the calling thread alone).
fn time<F: FnMut()>(mut f: F, min_secs: f64) -> f64 {
    let clock: fn() -> f64 = if cpu_clock() { thread_cpu_secs } else { wall_secs };
    f();
    let t = clock();
    let mut n = 0;
    while clock() - t < min_secs {
        f();
        n += 1;
    }
    (clock() - t) / n as f64
}

fn cpu_clock() -> bool {
    std::env::var("DEEPGUARD_BENCH_CLOCK").is_ok_and(|v| v == "cpu")
}

fn wall_secs() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    // the scalar reference only with --scalar (it is slow)
    let scalar = std::env::args().any(|a| a == "--scalar");
    let isas: Vec<Isa> = Isa::available().into_iter().filter(|&i| scalar || i != Isa::Scalar || Isa::detect() == Isa::Scalar).collect();
    if cpu_clock() {
        let threads = deepguard_runtime::kernels::pool::global().threads();
        println!("clock: this thread's CPU time ({threads} kernel thread(s){})\n", if threads > 1 { "; the other threads' work is not counted: set CANDLE_NUM_THREADS=1" } else { "" });
    }
    println!("| type | rows x cols | use | isa | layout | m=1 GB/s | m=1 us | m=10 GMAC/s | m=128 GMAC/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (dt, n, k, what) in [
        (GgmlDType::Q5_0, 4864, 896, "0.5B gate, up"),
        (GgmlDType::Q5_0, 896, 896, "0.5B q, o"),
        (GgmlDType::Q8_0, 896, 896, "0.5B"),
        // the output heads: 136 and 191 MB, far beyond the caches (memory bandwidth)
        (GgmlDType::Q8_0, 151936, 896, "0.5B head"),
        (GgmlDType::Q4_0, 4864, 896, "-"),
        (GgmlDType::Q4_1, 1536, 576, "SmolLM2"),
        (GgmlDType::Q4K, 896, 4864, "0.5B down"),
        (GgmlDType::Q6K, 896, 4864, "0.5B down"),
        (GgmlDType::Q4K, 8960, 1536, "1.5B gate, up"),
        (GgmlDType::Q4K, 1536, 1536, "1.5B q, o"),
        (GgmlDType::Q6K, 1536, 8960, "1.5B down"),
        (GgmlDType::Q6K, 151936, 1536, "1.5B head"),
    ] {
        if filter.as_ref().is_some_and(|f| !format!("{dt:?}").contains(f.as_str())) {
            continue;
        }
        let plain = random_matrix(dt, n, k);
        let packed = plain.clone().packed();
        // the interleaved layout where it applies (SIMD ISAs; the scalar path reads it with the reference)
        let layouts: Vec<(&QMatrix, Isa)> = isas
            .iter()
            .flat_map(|&isa| {
                let mut v = vec![(&plain, isa)];
                if packed.is_packed() && isa != Isa::Scalar {
                    v.push((&packed, isa));
                }
                v
            })
            .collect();
        for (q, isa) in layouts {
            let mut row = vec![];
            for m in [1usize, 10, 128] {
                if (isa == Isa::Scalar || n * k > 50_000_000) && m == 128 {
                    row.push(f64::NAN);
                    continue;
                }
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
                let mut out = vec![0f32; m * n];
                let s = time(|| q.matmul(&x, m, &mut out, isa), 0.3);
                row.push(s);
            }
            let bytes = q.bytes().len() as f64;
            let macs = (n * k) as f64;
            println!(
                "| {dt:?} | {n} x {k} | {what} | {isa:?} | {} | {:.1} | {:.0} | {:.1} | {:.1} |",
                if q.is_packed() { "interleaved" } else { "gguf" },
                bytes / row[0] / 1e9,
                row[0] * 1e6,
                10.0 * macs / row[1] / 1e9,
                128.0 * macs / row[2] / 1e9
            );
        }
    }
    if filter.as_ref().is_none_or(|f| f == "vmath" || f == "attention") {
        elementwise_and_attention();
    }
}

/// A quantized `n` x `k` matrix of random weights: up to 1024 rows quantized, their GGUF bytes
/// repeated for the rest (quantizing a 151936-row head takes long; its bytes stream the same).
fn random_matrix(dt: GgmlDType, n: usize, k: usize) -> QMatrix {
    let base = n.min(1024);
    let w = Tensor::randn(0f32, 1.0, (base, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dt).unwrap();
    let bytes = q.data().unwrap();
    let row = bytes.len() / base;
    let data: Vec<u8> = (0..n).flat_map(|r| bytes[(r % base) * row..(r % base + 1) * row].iter().copied()).collect();
    QMatrix::from_bytes(WType::from_ggml(dt).unwrap(), n, k, data).unwrap()
}

/// The non-matmul parts of a decode step at Qwen2.5-Coder-0.5B's shapes.
fn elementwise_and_attention() {
    use deepguard_runtime::kernels::attention::{causal_attention, AttnShape, KvView};
    use deepguard_runtime::kernels::vmath;
    let n = 10 * 4864;
    let g: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0).collect();
    let u: Vec<f32> = g.iter().map(|x| x * 0.5).collect();
    let s = time(|| drop(std::hint::black_box(vmath::silu_mul(&g, &u))), 0.3);
    println!("\nsilu(gate) * up, 10 x 4864: {:.1} us ({:.2} ns/element)", s * 1e6, s * 1e9 / n as f64);
    let row: Vec<f32> = (0..151936).map(|i| ((i * 7919 % 1000) as f32 / 50.0) - 10.0).collect();
    let s = time(|| { std::hint::black_box(vmath::exp_shifted_sum(&mut row.clone(), 10.0, 1.25)); }, 0.3);
    println!("softmax numerators of one vocabulary row (151936, with a copy): {:.1} us", s * 1e6);
    println!("| attention | batch | kv length | us per layer |");
    println!("|---|---|---|---|");
    // (model, heads, kv heads, head_dim)
    for (model, nh, nkv, hd) in [("0.5B: heads 14, kv heads 2, head_dim 64", 14, 2, 64), ("1.5B: heads 12, kv heads 2, head_dim 128", 12, 2, 128)] {
        for (batch, t, pos) in [(1usize, 1usize, 160usize), (1, 1, 600), (10, 1, 160), (1, 512, 0)] {
            let cap = pos + t;
            let q: Vec<f32> = (0..batch * nh * t * hd).map(|i| (i % 97) as f32 * 0.01).collect();
            let kv: Vec<f32> = (0..batch * nkv * cap * hd).map(|i| (i % 89) as f32 * 0.01).collect();
            let view = KvView { data: &kv, batch_stride: nkv * cap * hd, head_stride: cap * hd };
            let shape = AttnShape { batch, n_heads: nh, n_kv_heads: nkv, head_dim: hd, t, pos };
            let s = time(|| drop(std::hint::black_box(causal_attention(&q, view, view, shape))), 0.3);
            println!("| {model}, {} | {batch} | {} | {:.1} |", if t > 1 { format!("prefill {t}") } else { "decode".into() }, pos + t, s * 1e6);
        }
    }
}
