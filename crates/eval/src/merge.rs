//! Joining the shard folders of a sharded run ([`crate::shard`]) into one run folder with the
//! layout of an unsharded run: one folder per method holding `config.json` and the stores, then
//! the reports (and, for `compare`, the comparison tables) written by the same code as an
//! unsharded run's, so they come out byte-identical.
//!
//! Merging refuses, naming what is wrong: shards of different runs (their manifests disagree on
//! a setting, or a method's `config.json` differs: [`crate::pipeline::check_config`]), a shard
//! given twice or missing (with the scenarios it holds), a sample stored by two shards, and a
//! shard that is not finished (the scenarios whose samples are not all generated, tested and
//! judged). It reads only the shard folders: neither the benchmark nor the tools are needed.

use crate::pipeline::{check_config, report_folder};
use crate::report::{self, judge_file, MethodRun};
use crate::shard::{Command, Manifest, MANIFEST};
use crate::store::{write_atomic, Jsonl};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What a merge produced.
pub struct Merged {
    /// The first shard's manifest (the settings all shards share).
    pub manifest: Manifest,
    pub shards: usize,
    /// The method folders written, by name.
    pub methods: Vec<String>,
    /// The reports' content, per method.
    pub runs: Vec<MethodRun>,
    /// `compare` runs: the comparison table (markdown) and its JSON.
    pub compare: Option<(String, serde_json::Value)>,
}

/// The shard folders `runs` names: each is a shard folder (it holds `shard.json`) or a run
/// folder holding `shard-I-of-N` folders.
pub fn shard_folders(runs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for r in runs {
        if r.join(MANIFEST).is_file() {
            out.push(r.clone());
            continue;
        }
        let rd = std::fs::read_dir(r).with_context(|| format!("{}: cannot list (not a run folder?)", r.display()))?;
        let mut found: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("shard-")) && p.join(MANIFEST).is_file()).collect();
        if found.is_empty() {
            bail!("{}: neither a shard folder (no {MANIFEST}) nor a run folder holding shard-I-of-N folders", r.display());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// The key of every stored record.
#[derive(Deserialize)]
struct Key {
    scenario: String,
    idx: usize,
}

/// A value for an error message, cut short.
fn brief(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

/// At most `k` items of a list, then how many more.
fn listing(items: &[String], k: usize) -> String {
    let mut s = items.iter().take(k).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > k {
        s += &format!(" and {} more", items.len() - k);
    }
    s
}

/// Merges the shard folders `shards` into the run folder `out` and writes its reports.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<Merged> {
    let mut mans: Vec<(PathBuf, Manifest)> = shards.iter().map(|d| Ok((d.clone(), Manifest::read(d)?))).collect::<Result<_>>()?;
    if mans.is_empty() {
        bail!("no shard folders to merge");
    }
    mans.sort_by_key(|(_, m)| m.shard.index);
    // One run: every shard has the settings of the first.
    let (d0, m0) = (&mans[0].0, &mans[0].1);
    let s0 = m0.settings();
    for (d, m) in &mans[1..] {
        let s = m.settings();
        for (k, v) in &s0 {
            if s.get(k) != Some(v) {
                bail!(
                    "{} and {}: the shards were run with different {k} ({} vs {}); merge the shards of one run",
                    Manifest::path(d0).display(),
                    Manifest::path(d).display(),
                    brief(v),
                    s.get(k).map(brief).unwrap_or_default()
                );
            }
        }
    }
    let n = m0.shard.count;
    let selection: Vec<&str> = m0.scenarios.iter().map(|s| s.id.as_str()).collect();
    let selected: HashSet<&str> = selection.iter().copied().collect();
    // Each shard once; each scenario in one shard.
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for w in mans.windows(2) {
        if w[0].1.shard.index == w[1].1.shard.index {
            bail!("{} and {}: both are shard {}; give each shard once", w[0].0.display(), w[1].0.display(), w[0].1.shard);
        }
    }
    for (d, m) in &mans {
        for id in &m.own {
            if !selected.contains(id.as_str()) {
                bail!("{}: scenario {id} is not in the run's selection", Manifest::path(d).display());
            }
            if let Some(o) = owner.insert(id, m.shard.index) {
                bail!("{}: scenario {id} is in shard {o}/{n} and in shard {}; the shards come from different splits", Manifest::path(d).display(), m.shard);
            }
        }
    }
    let present: BTreeSet<usize> = mans.iter().map(|(_, m)| m.shard.index).collect();
    let missing: Vec<String> = (1..=n).filter(|i| !present.contains(i)).map(|i| format!("{i}/{n}")).collect();
    let orphans: Vec<String> = selection.iter().filter(|id| !owner.contains_key(**id)).map(|s| s.to_string()).collect();
    if !missing.is_empty() {
        bail!(
            "shard {} missing (no shard-I-of-{n} folder with a {MANIFEST} among {}): {} scenario(s) not evaluated: {}; run the missing shard(s) with the same command (--shard I/{n}) and merge again",
            missing.join(", "),
            listing(&mans.iter().map(|(d, _)| d.display().to_string()).collect::<Vec<_>>(), 4),
            orphans.len(),
            listing(&orphans, 8)
        );
    }
    if !orphans.is_empty() {
        bail!("{} scenario(s) of the selection are in no shard: {}; the shards come from different splits", orphans.len(), listing(&orphans, 8));
    }

    // Methods: compare's in its order, eval's every method folder of the shards.
    let method_dirs = |d: &Path| -> Result<BTreeSet<String>> {
        let rd = std::fs::read_dir(d).with_context(|| format!("{}: cannot list", d.display()))?;
        Ok(rd.flatten().filter(|e| e.path().join("config.json").is_file()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
    };
    let mut methods: Vec<String> = match &m0.command {
        Command::Compare { methods, .. } => methods.clone(),
        Command::Eval => vec![],
    };
    for (d, _) in &mans {
        for m in method_dirs(d)? {
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
    }
    // Validate everything before writing anything.
    let judge_store = judge_file(&m0.judge);
    let mut incomplete: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut plan: Vec<(String, serde_json::Value, BTreeMap<String, String>)> = vec![];
    for method in &methods {
        let mut config: Option<(usize, serde_json::Value)> = None;
        let mut files: BTreeSet<String> = BTreeSet::new();
        for (d, m) in &mans {
            let mdir = d.join(method);
            let cpath = mdir.join("config.json");
            if !cpath.is_file() {
                if !m.own.is_empty() {
                    incomplete.entry(m.shard.index).or_default().push(format!("`{method}` not started ({} scenarios)", m.own.len()));
                }
                continue;
            }
            let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cpath).with_context(|| format!("{}: cannot read", cpath.display()))?)
                .with_context(|| format!("{}: not valid JSON", cpath.display()))?;
            match &config {
                None => config = Some((m.shard.index, c)),
                Some((i, c0)) if *c0 != c => bail!("{}: method `{method}` was run with other settings in shard {} than in shard {i}/{n} ({} vs {}); merge the shards of one run", cpath.display(), m.shard, brief(&c), brief(c0)),
                Some(_) => {}
            }
            for e in std::fs::read_dir(&mdir).with_context(|| format!("{}: cannot list", mdir.display()))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".jsonl") {
                    files.insert(name);
                }
            }
        }
        let Some((_, config)) = config else { continue };
        let want = config.pointer("/sampling/n").and_then(|v| v.as_u64()).with_context(|| format!("method `{method}`: its config.json has no sampling.n"))? as usize;
        // Each store: the shards' records, verbatim, in shard order; a key in two shards is a
        // duplicate; a shard holding a selected scenario of another shard is from another split.
        let mut stores: BTreeMap<String, String> = BTreeMap::new();
        let mut keys: HashMap<&str, HashSet<(String, usize)>> = HashMap::new();
        for file in &files {
            let mut text = String::new();
            let mut seen: HashMap<(String, usize), usize> = HashMap::new();
            for (d, m) in &mans {
                let path = d.join(method).join(file);
                for (k, line) in Jsonl::new(&path).load_lines::<Key>()? {
                    if let Some(&o) = owner.get(k.scenario.as_str()) {
                        if o != m.shard.index {
                            bail!("{}: holds sample {}#{} of shard {o}/{n}: a duplicate (the shards come from different splits or runs)", path.display(), k.scenario, k.idx);
                        }
                    }
                    let key = (k.scenario, k.idx);
                    if let Some(&o) = seen.get(&key) {
                        if o != m.shard.index {
                            bail!("{}: sample {}#{} is also stored by shard {o}/{n}: a duplicate; the shards come from different runs", path.display(), key.0, key.1);
                        }
                    }
                    seen.insert(key, m.shard.index);
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            keys.insert(file.as_str(), seen.into_keys().collect());
            stores.insert(file.clone(), text);
        }
        // Completeness: every sample of every scenario generated, tested and judged.
        for (_, m) in &mans {
            for id in &m.own {
                let count = |file: &str| keys.get(file).map_or(0, |k| (0..want).filter(|i| k.contains(&(id.clone(), *i))).count());
                let what = [("samples.jsonl", "generated".to_string()), ("tests.jsonl", "tested".to_string()), (judge_store.as_str(), format!("judged by {}", m0.judge))]
                    .into_iter()
                    .map(|(f, verb)| (count(f), verb))
                    .find(|(k, _)| *k < want);
                if let Some((k, verb)) = what {
                    incomplete.entry(m.shard.index).or_default().push(format!("`{method}` {id}: {k} of {want} samples {verb}"));
                }
            }
        }
        plan.push((method.clone(), config, stores));
    }
    if !incomplete.is_empty() {
        let parts: Vec<String> = incomplete
            .iter()
            .map(|(i, what)| {
                let d = &mans.iter().find(|(_, m)| m.shard.index == *i).unwrap().0;
                format!("shard {i}/{n} ({}): {}", d.display(), listing(what, 6))
            })
            .collect();
        bail!("unfinished shard(s), resume each with the command that started it (it continues where it stopped), then merge again: {}", parts.join("; "));
    }

    // Write the run folder: configs (refused when the folder holds another run's), stores (an
    // earlier merge's may only grow), then the reports.
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    for (method, config, stores) in &plan {
        let mdir = out.join(method);
        std::fs::create_dir_all(&mdir).with_context(|| format!("{}: cannot create", mdir.display()))?;
        check_config(&mdir.join("config.json"), config)?;
        for (file, text) in stores {
            let dest = mdir.join(file);
            if let Ok(old) = std::fs::read_to_string(&dest) {
                if old == *text {
                    continue;
                }
                let new: HashSet<&str> = text.lines().collect();
                if let Some(l) = old.lines().find(|l| !l.trim().is_empty() && !new.contains(l)) {
                    bail!("{}: holds a record the shards do not ({}); merge into another folder", dest.display(), l.chars().take(120).collect::<String>());
                }
            }
            write_atomic(&dest, text.as_bytes())?;
        }
    }
    let methods: Vec<String> = plan.iter().map(|p| p.0.clone()).collect();
    let scenarios = &m0.scenarios;
    let (runs, compare) = match &m0.command {
        Command::Eval => (report_folder(out, scenarios, &m0.skipped, &m0.judge)?, None),
        Command::Compare { methods: order, resamples, groups } => {
            let runs = order.iter().map(|m| report::load_method(&out.join(m), scenarios, &m0.judge)).collect::<Result<Vec<_>>>()?;
            report::write_all(out, &runs, &m0.skipped)?;
            let c = crate::compare::write_tables(out, &runs, *resamples, &m0.sampling, &m0.judge, groups)?;
            (runs, Some(c))
        }
    };
    let mut manifest = m0.clone();
    manifest.own = vec![];
    Ok(Merged { manifest, shards: mans.len(), methods, runs, compare })
}
