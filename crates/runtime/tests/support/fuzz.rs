//! Property-based fuzzing on stable Rust, shared by the fuzz tests of every crate (included with
//! `#[path]`): inputs are mutations of a valid file (length fields set to 0, 2^32, 2^60,
//! u64::MAX…, bytes flipped, truncations, insertions, splices) or structure-aware JSON edits,
//! drawn by proptest from a fixed seed for a fixed number of cases. Each case must end in `Ok`
//! or in one error that names the file (one line), never in a panic, and never allocate more
//! than [`MAX_ALLOC`] at once: the test binary's allocator records the largest request of the
//! case's thread and aborts the whole run on a request over 1 GiB (a length read from the file
//! and believed).
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The largest single allocation a case may make (the inputs are at most a few hundred KB).
pub const MAX_ALLOC: usize = 64 << 20;
const ABORT_ABOVE: usize = 1 << 30;

pub struct Counting;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(n: usize) {
    if n > ABORT_ABOVE {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"fuzz: an allocation over 1 GiB was requested (a length read from a file and believed)\n");
        std::process::abort();
    }
    let _ = PEAK.try_with(|p| {
        if n > p.get() {
            p.set(n)
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

/// What a fuzz target did over all its cases (for the printed summary and docs/security.md).
#[derive(Debug, Default)]
pub struct Summary {
    pub cases: u32,
    pub rejected: u32,
    pub accepted: u32,
    pub largest_alloc: usize,
}

/// Runs `cases` inputs drawn from `strategy` (fixed `seed`) through `parse`. A case fails the
/// test when `parse` panics, allocates over [`MAX_ALLOC`] at once, or returns an error whose
/// message (with its causes) is not one line naming `file`.
pub fn fuzz<S: Strategy>(name: &str, cases: u32, seed: u64, strategy: S, file: &str, parse: impl Fn(&S::Value) -> anyhow::Result<()>) -> Summary
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, max_shrink_iters: 64, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let sum = std::cell::RefCell::new(Summary::default());
    let result = runner.run(&strategy, |input| {
        PEAK.with(|p| p.set(0));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&input)));
        let peak = PEAK.with(|p| p.get());
        let mut s = sum.borrow_mut();
        s.cases += 1;
        s.largest_alloc = s.largest_alloc.max(peak);
        match r {
            Err(_) => return Err(TestCaseError::fail(format!("{name}: the parser panicked"))),
            Ok(Ok(())) => s.accepted += 1,
            Ok(Err(e)) => {
                let msg = format!("{e:#}");
                if !msg.contains(file) || msg.contains('\n') {
                    return Err(TestCaseError::fail(format!("{name}: the error is not one line naming {file}: {msg}")));
                }
                s.rejected += 1;
            }
        }
        if peak > MAX_ALLOC {
            return Err(TestCaseError::fail(format!("{name}: one allocation of {peak} bytes")));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {name} failed: {e}");
    }
    let s = sum.into_inner();
    // Shrinking may run extra cases; report the ones drawn.
    println!(
        "fuzz {name}: {cases} cases (seed {seed}), 0 panics, {} rejected with one error naming the file, {} accepted, largest allocation {} KiB",
        s.rejected,
        s.accepted,
        s.largest_alloc >> 10
    );
    s
}

/// Values a length or count field is set to.
pub fn special_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(0xffff_ffff),
        Just(1 << 32),
        Just(1 << 60),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(u64::MAX - 7),
        0u64..4096,
        any::<u64>(),
    ]
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Overwrite the 8-byte field at a known length/count/offset position.
    Field(Index, u64),
    /// Overwrite 4 or 8 bytes anywhere.
    Word(Index, u64, bool),
    Xor(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Copy a chunk of the file over another place.
    Splice(Index, Index, usize),
}

/// Mutations of `seed` (a valid file); `fields` are byte offsets of its 8-byte length, count
/// and offset fields (mutated most often: they drive allocation).
pub fn mutated(seed: Vec<u8>, fields: Vec<usize>) -> impl Strategy<Value = Vec<u8>> {
    let op = prop_oneof![
        3 => (any::<Index>(), special_u64()).prop_map(|(i, v)| Op::Field(i, v)),
        2 => (any::<Index>(), special_u64(), any::<bool>()).prop_map(|(i, v, w)| Op::Word(i, v, w)),
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Op::Xor(i, x)),
        1 => any::<Index>().prop_map(Op::Truncate),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..32)).prop_map(|(i, b)| Op::Insert(i, b)),
        1 => (any::<Index>(), 1usize..256).prop_map(|(i, n)| Op::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..512).prop_map(|(a, b, n)| Op::Splice(a, b, n)),
    ];
    proptest::collection::vec(op, 1..5).prop_map(move |ops| apply(&seed, &fields, &ops))
}

fn apply(seed: &[u8], fields: &[usize], ops: &[Op]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for op in ops {
        if b.is_empty() {
            break;
        }
        let n = b.len();
        match op {
            Op::Field(i, v) => {
                let at = if fields.is_empty() { i.index(n) } else { fields[i.index(fields.len())] };
                put(&mut b, at, &v.to_le_bytes());
            }
            Op::Word(i, v, wide) => {
                let bytes = v.to_le_bytes();
                put(&mut b, i.index(n), if *wide { &bytes[..] } else { &bytes[..4] });
            }
            Op::Xor(i, x) => b[i.index(n)] ^= x,
            Op::Truncate(i) => b.truncate(i.index(n)),
            Op::Insert(i, bytes) => {
                let at = i.index(n);
                b.splice(at..at, bytes.iter().copied());
            }
            Op::Delete(i, k) => {
                let at = i.index(n);
                b.drain(at..(at + k).min(n));
            }
            Op::Splice(from, to, k) => {
                let (f, t) = (from.index(n), to.index(n));
                let chunk: Vec<u8> = b[f..(f + k).min(n)].to_vec();
                put(&mut b, t, &chunk);
            }
        }
    }
    b
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    if at >= b.len() {
        return;
    }
    let end = (at + bytes.len()).min(b.len());
    b[at..end].copy_from_slice(&bytes[..end - at]);
}

/// Byte offsets of the 8-byte length, count, dimension and offset fields of a GGUF (v2/v3) file,
/// and of its 4-byte type fields (as the start of the 8 bytes there).
pub fn gguf_fields(b: &[u8]) -> Vec<usize> {
    let mut out = vec![8, 16];
    let rd = |at: usize, n: usize| -> Option<u64> { b.get(at..at + n).map(|s| s.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64)) };
    fn value(b: &[u8], at: &mut usize, ty: u64, out: &mut Vec<usize>, rd: &dyn Fn(usize, usize) -> Option<u64>) -> Option<()> {
        match ty {
            0 | 1 | 7 => *at += 1,
            2 | 3 => *at += 2,
            4..=6 => *at += 4,
            10..=12 => *at += 8,
            8 => {
                out.push(*at);
                *at += 8 + rd(*at, 8)? as usize;
            }
            9 => {
                out.push(*at);
                let et = rd(*at, 4)?;
                out.push(*at + 4);
                let n = rd(*at + 4, 8)?;
                *at += 12;
                for _ in 0..n.min(b.len() as u64) {
                    value(b, at, et, out, rd)?;
                }
            }
            _ => return None,
        }
        Some(())
    }
    let (Some(nt), Some(nk)) = (rd(8, 8), rd(16, 8)) else { return out };
    let mut at = 24;
    for _ in 0..nk {
        out.push(at);
        let Some(kl) = rd(at, 8) else { return out };
        at += 8 + kl as usize;
        out.push(at);
        let Some(ty) = rd(at, 4) else { return out };
        at += 4;
        if value(b, &mut at, ty, &mut out, &rd).is_none() {
            return out;
        }
    }
    for _ in 0..nt {
        out.push(at);
        let Some(nl) = rd(at, 8) else { return out };
        at += 8 + nl as usize;
        out.push(at);
        let Some(nd) = rd(at, 4) else { return out };
        at += 4;
        for _ in 0..nd {
            out.push(at);
            at += 8;
        }
        out.push(at);
        at += 4;
        out.push(at);
        at += 8;
    }
    out.retain(|&o| o + 8 <= b.len());
    out
}

/// A JSON value of awkward shape: huge and negative numbers, wrong types, deep nesting.
pub fn awkward_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(1u64 << 60)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(json!("")),
        Just(json!("x".repeat(100))),
        Just(json!("CWE-89")),
        Just(json!("py")),
        Just(json!([])),
        Just(json!({})),
        any::<i64>().prop_map(|x| json!(x)),
        "[ -~]{0,12}".prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..4).prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Structure-aware edits of a JSON document: a value at some path replaced by an awkward one,
/// a key removed; the text then sometimes mutated as bytes.
pub fn json_mutated(seed: serde_json::Value) -> impl Strategy<Value = String> {
    let edits = proptest::collection::vec((any::<Index>(), awkward_json(), any::<bool>()), 1..4);
    let bytes = proptest::option::weighted(0.3, proptest::collection::vec((any::<Index>(), 1u8..=255), 1..4));
    (edits, bytes).prop_map(move |(edits, flips)| {
        let mut v = seed.clone();
        for (i, new, remove) in edits {
            let paths = paths_of(&v);
            let p = &paths[i.index(paths.len())];
            edit(&mut v, p, new, remove);
        }
        let mut s = serde_json::to_string(&v).unwrap();
        if let Some(flips) = flips {
            let mut b = s.into_bytes();
            for (i, x) in flips {
                let k = i.index(b.len().max(1)).min(b.len().saturating_sub(1));
                if !b.is_empty() {
                    b[k] ^= x;
                }
            }
            s = String::from_utf8_lossy(&b).into_owned();
        }
        s
    })
}

fn paths_of(v: &serde_json::Value) -> Vec<Vec<String>> {
    let mut out = vec![vec![]];
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                for mut p in paths_of(x) {
                    p.insert(0, k.clone());
                    out.push(p);
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate().take(8) {
                for mut p in paths_of(x) {
                    p.insert(0, i.to_string());
                    out.push(p);
                }
            }
        }
        _ => {}
    }
    out
}

fn edit(v: &mut serde_json::Value, path: &[String], new: serde_json::Value, remove: bool) {
    if path.is_empty() {
        *v = new;
        return;
    }
    let (head, rest) = (&path[0], &path[1..]);
    match v {
        serde_json::Value::Object(m) if rest.is_empty() && remove => {
            m.remove(head);
        }
        serde_json::Value::Object(m) => {
            if let Some(x) = m.get_mut(head) {
                edit(x, rest, new, remove);
            }
        }
        serde_json::Value::Array(a) => {
            if let Some(x) = head.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                edit(x, rest, new, remove);
            }
        }
        _ => {}
    }
}

/// The header length field and the numbers of the JSON header of a safetensors file are
/// rewritten (structure-aware), the data kept: the JSON is edited with [`json_mutated`] and the
/// file rebuilt with a consistent length prefix (or, one time in five, the raw prefix mutated).
pub fn safetensors_mutated(file: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let data = file[8 + n..].to_vec();
    (json_mutated(header), proptest::option::weighted(0.2, special_u64())).prop_map(move |(h, len)| {
        let mut out = (len.unwrap_or(h.len() as u64)).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&data);
        out
    })
}
