//! Resumable storage: append-only JSON-lines files, one record per line, flushed as each record
//! is produced. A run killed mid-write leaves at most a truncated last line, which loading
//! ignores; any other bad line is an error naming the file and line.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use deepguard_runtime::files::write_atomic;

pub struct Jsonl {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl Jsonl {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), file: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and flushes it to the OS.
    pub fn append<T: Serialize>(&self, rec: &T) -> Result<()> {
        let mut line = serde_json::to_string(rec)?;
        line.push('\n');
        let mut g = self.file.lock().unwrap();
        if g.is_none() {
            if let Some(d) = self.path.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("{}: cannot create folder", d.display()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("{}: cannot open for appending", self.path.display()))?;
            // Terminate a truncated last line left by a killed run, so the new record starts
            // on a line of its own.
            if let Ok(s) = std::fs::read(&self.path) {
                if !s.is_empty() && !s.ends_with(b"\n") {
                    f.write_all(b"\n")?;
                }
            }
            *g = Some(f);
        }
        let f = g.as_mut().unwrap();
        f.write_all(line.as_bytes()).with_context(|| format!("{}: write failed", self.path.display()))?;
        f.flush()?;
        Ok(())
    }

    /// All records (none when the file does not exist yet).
    pub fn load<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        Ok(self.load_lines()?.into_iter().map(|(r, _)| r).collect())
    }

    /// All records with their lines as stored (to copy them verbatim, e.g. when merging shards).
    pub fn load_lines<T: DeserializeOwned>(&self) -> Result<Vec<(T, String)>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", self.path.display())),
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(l) {
                Ok(r) => out.push((r, l.to_string())),
                // A line cut short by a killed run: only possible for a line not followed by a
                // newline-terminated record. Skip it; the record is produced again.
                Err(e) if e.is_eof() => continue,
                Err(e) => bail!("{}:{}: bad record: {e}", self.path.display(), i + 1),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct R {
        k: String,
        v: u32,
    }

    #[test]
    fn appends_reloads_and_survives_a_truncated_line() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/x.jsonl");
        let s = Jsonl::new(&p);
        assert!(s.load::<R>().unwrap().is_empty());
        s.append(&R { k: "a".into(), v: 1 }).unwrap();
        s.append(&R { k: "b".into(), v: 2 }).unwrap();
        // Simulate a kill in the middle of writing a third record.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"k\":\"c\",\"v\"").unwrap();
        drop(f);
        let s2 = Jsonl::new(&p);
        assert_eq!(s2.load::<R>().unwrap(), vec![R { k: "a".into(), v: 1 }, R { k: "b".into(), v: 2 }]);
        s2.append(&R { k: "c".into(), v: 3 }).unwrap();
        let all: Vec<R> = s2.load().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2], R { k: "c".into(), v: 3 });
        // A corrupt line in the middle is an error naming the file and line.
        std::fs::write(&p, "{\"k\":\"a\",\"v\":1}\nnot json\n{\"k\":\"b\",\"v\":2}\n").unwrap();
        let e = format!("{:#}", Jsonl::new(&p).load::<R>().unwrap_err());
        assert!(e.contains("x.jsonl:2: bad record"), "{e}");
    }
}
