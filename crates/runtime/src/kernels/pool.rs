//! The kernels' thread pool: fork-join where the caller never waits for a worker that has not
//! started on the job.
//!
//! candle's barrier pool waits, at the end of every call, for each worker to signal done. On a
//! machine where another process holds a core, a worker that the scheduler has not run yet
//! holds the caller for a whole time slice (milliseconds), and a decode step makes ~150 such
//! calls: the 1.5B model decoded at 3-8 tok/s with one other busy process on the 2-core VM, where
//! one core alone gives about half of the quiet 27-38. Here a job is open until the caller has
//! run out of work; a worker joins only while it is open (one atomic compare-and-swap), and the
//! caller then waits only for the workers that joined. Jobs must share their work through a
//! counter (any number of the threads may take part), never split it by thread index.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bit set while a job is closed to newcomers.
const CLOSED: u64 = 1 << 31;
/// Low 31 bits: workers inside the current job.
const INSIDE: u64 = CLOSED - 1;

struct Shared {
    /// `(generation << 32) | CLOSED? | workers inside`.
    state: AtomicU64,
    /// The job: a trampoline and the caller's closure. Written only while the job is closed and
    /// no worker is inside; read only by a worker that joined.
    job: std::cell::UnsafeCell<(unsafe fn(*const ()), *const ())>,
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Test hook: a worker takes this lock before trying to join a job.
    gate: Option<Arc<Mutex<()>>>,
    /// Set when the pool is dropped: the workers end.
    stop: std::sync::atomic::AtomicBool,
}

// SAFETY: `job` is accessed under the protocol documented on it.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::Thread>,
    /// One job at a time.
    call: Mutex<()>,
}

/// Spins before a waiting worker parks (about 10-50 us): decode steps call the pool every few
/// microseconds to a millisecond, so a worker is usually still spinning when the next job opens.
const SPINS: u32 = 20_000;

impl Pool {
    /// A pool with `workers` threads besides the caller.
    pub fn new(workers: usize) -> Self {
        Self::build(workers, None)
    }

    /// Test hook: the workers must take `gate` before joining each job, so a test can hold them
    /// back as the scheduler would.
    #[doc(hidden)]
    pub fn with_gate(workers: usize, gate: Arc<Mutex<()>>) -> Self {
        Self::build(workers, Some(gate))
    }

    fn build(workers: usize, gate: Option<Arc<Mutex<()>>>) -> Self {
        let shared = Arc::new(Shared { state: AtomicU64::new(CLOSED), job: std::cell::UnsafeCell::new((noop, std::ptr::null())), panic: Mutex::new(None), gate, stop: Default::default() });
        let workers = (0..workers)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("deepguard-kernel-{i}")).spawn(move || worker(&s)).expect("failed to start a kernel thread").thread().clone()
            })
            .collect();
        Self { shared, workers, call: Mutex::new(()) }
    }

    /// Threads that can take part in a job: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f` on the calling thread and on every worker that starts before the caller's `f`
    /// returns; returns once all of them have returned. `f` must take its work from a shared
    /// counter until none is left.
    pub fn run<F: Fn() + Sync>(&self, f: F) {
        if self.workers.is_empty() {
            return f();
        }
        let _one = self.call.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let gen = (s.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        // SAFETY: the job is closed and nobody is inside (the previous call waited for that).
        unsafe { *s.job.get() = (call::<F>, &f as *const F as *const ()) };
        s.state.store(gen << 32, Ordering::Release);
        for w in &self.workers {
            w.unpark();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&f));
        // close, then wait for the workers inside (they are running: each finishes its last item)
        let mut st = s.state.fetch_or(CLOSED, Ordering::AcqRel) | CLOSED;
        while st & INSIDE != 0 {
            std::hint::spin_loop();
            st = s.state.load(Ordering::Acquire);
        }
        // a worker's panic is taken (cleared) even when the caller's own is the one passed on
        let theirs = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = mine.err().or(theirs) {
            std::panic::resume_unwind(p);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for w in &self.workers {
            w.unpark();
        }
    }
}

unsafe fn noop(_: *const ()) {}

unsafe fn call<F: Fn()>(p: *const ()) {
    // SAFETY: `p` is the `&F` that `run` stored; `run` does not return while a worker is inside.
    unsafe { (*(p as *const F))() }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // wait for a new open job
        let mut spins = 0;
        let st = loop {
            let st = s.state.load(Ordering::Acquire);
            if st >> 32 != seen && st & CLOSED == 0 {
                break st;
            }
            if st >> 32 != seen {
                seen = st >> 32; // closed before we saw it open: nothing to do
            }
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::park();
                spins = 0;
            }
        };
        seen = st >> 32;
        let _gate = s.gate.as_ref().map(|g| g.lock().unwrap_or_else(|e| e.into_inner()));
        // join if the job is still open (it may have closed, or a newer one opened, meanwhile)
        let mut cur = st;
        let joined = loop {
            if cur >> 32 != seen || cur & CLOSED != 0 {
                break false;
            }
            match s.state.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break true,
                Err(now) => cur = now,
            }
        };
        if joined {
            // SAFETY: we are inside an open job, whose description `run` wrote before opening
            // it and keeps alive until we leave.
            let (tramp, data) = unsafe { *s.job.get() };
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { tramp(data) })) {
                s.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
            }
            s.state.fetch_sub(1, Ordering::Release);
        }
    }
}

/// The process-wide pool: `CANDLE_NUM_THREADS` threads (else candle's count: `RAYON_NUM_THREADS`,
/// else the cores), the caller included.
pub fn global() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("CANDLE_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
        Pool::new(threads.unwrap_or_else(candle_core::utils::get_num_threads).saturating_sub(1))
    })
}
