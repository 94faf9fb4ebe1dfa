//! Atomic file writes, shared by every store that must survive a kill: probe and feature caches,
//! training checkpoints, eval run configs and reports. The new content goes to a temporary file
//! in the same folder, is flushed to disk, and replaces the old file in one rename, so a reader
//! sees the old file or the new one, never a part of either. A failed write (a full disk) leaves
//! the old file as it was and removes the temporary one.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Writes `path` atomically through `write`, which must create the file it is given.
pub fn atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let r = write(&tmp).and_then(|_| {
        crash_point(path, &tmp);
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot flush", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("{}: not written", path.display()))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    atomically(path, |tmp| std::fs::write(tmp, bytes).with_context(|| format!("cannot write {}", tmp.display())))
}

/// Crash testing: with `DEEPGUARD_CRASH_AT=<file name>:<n>` in the environment, the process
/// kills itself (SIGKILL: no destructor, no flush) in the middle of the n-th atomic write of a
/// file of that name, once half of the new content is in the temporary file. The crash tests
/// use it to kill a run at a precise point (e.g. during a checkpoint write); unset, it costs
/// one environment lookup per write.
fn crash_point(path: &Path, tmp: &Path) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("DEEPGUARD_CRASH_AT") else { return };
    let Some((name, n)) = spec.rsplit_once(':') else { return };
    if path.file_name().is_none_or(|f| f != name) {
        return;
    }
    if SEEN.fetch_add(1, Ordering::SeqCst) + 1 != n.parse::<usize>().unwrap_or(0) {
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(tmp) {
        let half = f.metadata().map(|m| m.len() / 2).unwrap_or(0);
        let _ = f.set_len(half);
    }
    eprintln!("crash test: killed while writing {}", path.display());
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_a_failed_write_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let e = atomically(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("disk full")
        });
        assert!(format!("{:#}", e.unwrap_err()).contains("disk full"));
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temporary file left");
    }
}
