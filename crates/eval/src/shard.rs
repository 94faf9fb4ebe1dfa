//! Sharded evaluation: the split of a benchmark's scenarios over N processes (a Slurm job
//! array, a Kubernetes Indexed Job, or N shells), each writing a complete run folder of its own,
//! `<out>/shard-I-of-N/`, that [`crate::merge`] joins into one run.
//!
//! **The split.** Scenario → shard is a function of the scenario and of the *whole benchmark*
//! (every scenario under `--data`, before any `--scenario` filter), never of the selection:
//! "stable under filtering" means a filter takes the same subset of every shard, so a shard run
//! with a narrower or wider filter, or resumed with another one, keeps each scenario in the
//! shard folder that already holds its results (nothing is redone, nothing lands in two shards).
//! Within that constraint the split is balanced by expected cost: scenarios in decreasing order
//! of [`cost`] (then by id) each go to the shard with the least cost so far (longest processing
//! time first), which makes the whole benchmark's shards even, and spreads the scenarios of one
//! language and CWE (neighbours in that order) over different shards, so the usual filters (a
//! CWE, a split, a language) stay even too. A filter that picks scenarios of one shard only can
//! leave the others idle; a changed benchmark (scenarios added or removed) is another split, and
//! merge refuses to join shards of different ones.
//!
//! **Seeds.** Sample i of a scenario is drawn from a generator derived from `--seed` and i
//! alone, so a scenario gives the same samples in any shard as in an unsharded run.

use crate::pipeline::EvalConfig;
use crate::scenario::{discover_all, Lang, Scenario};
use crate::store::write_atomic;
use anyhow::{bail, Context, Result};
use deepguard_runtime::generate::SamplingParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The environment variable giving the number of shards where the scheduler does not (a
/// Kubernetes Indexed Job has `JOB_COMPLETION_INDEX` but no count): set it to `completions`.
pub const COUNT_VAR: &str = "DEEPGUARD_SHARDS";
/// Each shard folder's record of the split and the run's settings.
pub const MANIFEST: &str = "shard.json";

/// Shard `index` of `count`, counted from 1 (`--shard 1/3` is the first of three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a shard: expected I/N with 1 <= I <= N, e.g. 2/3 (the second of three)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The shard's folder in the run folder.
    pub fn folder(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// The shard given by a scheduler's variables (`get` reads one; `std::env::var(..).ok()`):
    /// a Slurm job array (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` of
    /// `SLURM_ARRAY_TASK_COUNT`), or a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` of
    /// [`COUNT_VAR`]). Returns the shard and the variables it was read from (for a note), or
    /// None when none is set. Inconsistent values are an error naming the variables.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<(Shard, String)>> {
        let num = |k: &str| -> Result<Option<usize>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| anyhow::anyhow!("{k}={v:?} is not a whole number")),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let count = num("SLURM_ARRAY_TASK_COUNT")?.context("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let from = format!("SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_COUNT={count}");
            if id < min || id - min >= count {
                bail!("{from}: not one task of a contiguous array (submit with --array=0-{} and no step)", count.max(1) - 1);
            }
            return Ok(Some((Shard { index: id - min + 1, count }, from)));
        }
        match (num("JOB_COMPLETION_INDEX")?, num(COUNT_VAR)?) {
            (Some(i), Some(count)) => {
                let from = format!("JOB_COMPLETION_INDEX={i}, {COUNT_VAR}={count}");
                if i >= count {
                    bail!("{from}: the index must be below the count (set {COUNT_VAR} to the Job's completions)");
                }
                Ok(Some((Shard { index: i + 1, count }, from)))
            }
            (None, Some(count)) => bail!("{COUNT_VAR}={count} is set but no shard index is: give --shard I/{count} or run as a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)"),
            (Some(_), None) | (None, None) => Ok(None),
        }
    }
}

/// Expected relative cost of evaluating one scenario: generation (the same for every scenario at
/// given settings) plus its unit test, compiled and run natively for C (and again under a
/// sanitizer for the memory-safety CWEs), an interpreter start for Python. An estimate that
/// depends on the scenario alone, so the split does not move when other scenarios change.
pub fn cost(sc: &Scenario) -> u32 {
    let test = match (sc.unit_test.is_some(), sc.lang) {
        (false, _) => 0,
        (true, Lang::Py) => 1,
        (true, Lang::C) => 3,
    };
    2 + test
}

/// Scenario id → shard index (from 1) over the whole benchmark `all`: longest processing time
/// first, ties to the lowest shard.
pub fn assign(all: &[Scenario], count: usize) -> BTreeMap<String, usize> {
    let mut order: Vec<&Scenario> = all.iter().collect();
    order.sort_by(|a, b| cost(b).cmp(&cost(a)).then_with(|| a.id.cmp(&b.id)));
    let mut load = vec![0u64; count.max(1)];
    let mut out = BTreeMap::new();
    for sc in order {
        let k = (0..load.len()).min_by_key(|&k| (load[k], k)).unwrap();
        load[k] += cost(sc) as u64;
        out.insert(sc.id.clone(), k + 1);
    }
    out
}

/// The scenarios of `selection` that belong to `shard`, in the selection's order; the split is
/// made over every scenario under `data` ([`assign`]).
pub fn select(data: &Path, selection: &[Scenario], shard: Shard) -> Result<Vec<Scenario>> {
    let (all, _) = discover_all(data, &[])?;
    let of = assign(&all, shard.count);
    let mut mine = Vec::new();
    for sc in selection {
        match of.get(&sc.id) {
            Some(&k) if k == shard.index => mine.push(sc.clone()),
            Some(_) => {}
            None => bail!("{}: scenario {} is not in the benchmark's listing", data.display(), sc.id),
        }
    }
    Ok(mine)
}

/// Which command a shard ran, and what its report needs besides the stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// `deepguard eval`: the report covers every method folder of the run.
    Eval,
    /// `deepguard compare`: the methods in order (the first is the baseline) and the bootstrap's
    /// resamples.
    Compare {
        methods: Vec<String>,
        resamples: usize,
        /// What the `held-out` group means for this comparison.
        #[serde(default)]
        groups: crate::compare::Groups,
    },
}

/// A shard folder's `shard.json`: the split and everything the merged reports need that the
/// method folders do not hold, so merging needs neither the benchmark nor the tools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub shard: Shard,
    #[serde(flatten)]
    pub command: Command,
    /// The judge's name (it keys the verdict store).
    pub judge: String,
    pub sampling: SamplingParams,
    /// Scenarios of the benchmark the harness cannot run (listed in the report).
    pub skipped: Vec<String>,
    /// The whole selection, every shard's scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// The ids of this shard's scenarios.
    pub own: Vec<String>,
}

impl Manifest {
    pub fn path(shard_dir: &Path) -> std::path::PathBuf {
        shard_dir.join(MANIFEST)
    }

    pub fn write(&self, shard_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(shard_dir).with_context(|| format!("{}: cannot create the shard folder", shard_dir.display()))?;
        write_atomic(&Self::path(shard_dir), serde_json::to_string_pretty(self)?.as_bytes())
    }

    pub fn read(shard_dir: &Path) -> Result<Manifest> {
        let p = Self::path(shard_dir);
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read (not a shard folder?)", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a valid shard manifest", p.display()))
    }

    /// What every shard of one run must agree on, as named fields: everything but the shard's
    /// own index and scenarios, with scenarios reduced to what the reports read (their folders
    /// may be mounted at different paths on different machines).
    pub fn settings(&self) -> BTreeMap<&'static str, serde_json::Value> {
        let scen: Vec<serde_json::Value> = self.scenarios.iter().map(|s| serde_json::json!([s.id, s.cwe, s.lang, s.prompt()])).collect();
        let mut m = BTreeMap::new();
        m.insert("shard count", serde_json::json!(self.shard.count));
        m.insert("command", serde_json::to_value(&self.command).unwrap_or_default());
        m.insert("judge", serde_json::json!(self.judge));
        m.insert("sampling", serde_json::to_value(&self.sampling).unwrap_or_default());
        m.insert("skipped scenarios", serde_json::json!(self.skipped));
        m.insert("scenarios", serde_json::json!(scen));
        m
    }
}

/// Narrows `cfg` to `shard`: its scenarios and its folder `<out>/shard-I-of-N/`, where the
/// shard's manifest is written (at every start, before any stage runs, so even a shard killed
/// at once is known to merge). Returns the manifest.
pub fn narrow(cfg: &mut EvalConfig, shard: Shard, command: Command) -> Result<Manifest> {
    let own = select(&cfg.data, &cfg.scenarios, shard)?;
    let manifest = Manifest {
        shard,
        command,
        judge: cfg.judge()?.name(),
        sampling: cfg.params.clone(),
        skipped: cfg.skipped.clone(),
        scenarios: std::mem::take(&mut cfg.scenarios),
        own: own.iter().map(|s| s.id.clone()).collect(),
    };
    cfg.scenarios = own;
    cfg.out = cfg.out.join(shard.folder());
    manifest.write(&cfg.out)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sc(id: &str, lang: Lang) -> Scenario {
        Scenario {
            id: id.into(),
            split: "base".into(),
            cwe: "CWE-089".into(),
            name: id.rsplit('/').next().unwrap().into(),
            lang,
            dir: id.into(),
            file_context: String::new(),
            func_context: String::new(),
            check_ql: None,
            description: None,
            unit_test: Some("ut".into()),
        }
    }

    #[test]
    fn shard_flag_parses_and_refuses_out_of_range() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { index: 2, count: 3 });
        assert_eq!("1/1".parse::<Shard>().unwrap().folder(), "shard-1-of-1");
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", "-1/3"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(bad) && e.contains("I/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn shard_from_scheduler_variables() {
        let env = |vars: &[(&str, &str)]| {
            let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Shard::from_env(&move |k: &str| m.get(k).cloned())
        };
        assert_eq!(env(&[]).unwrap(), None);
        // Slurm, 0-based and 1-based arrays.
        let (s, from) = env(&[("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "0")]).unwrap().unwrap();
        assert_eq!((s, from.contains("SLURM_ARRAY_TASK_ID=0")), (Shard { index: 1, count: 3 }, true));
        let (s, _) = env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "1")]).unwrap().unwrap();
        assert_eq!(s, Shard { index: 3, count: 3 });
        // A stepped array (0-10:5 has ids 0, 5, 10 and count 3) is refused, naming the variables.
        let e = format!("{:#}", env(&[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "3")]).unwrap_err());
        assert!(e.contains("SLURM_ARRAY_TASK_ID=5") && e.contains("contiguous"), "{e}");
        let e = format!("{:#}", env(&[("SLURM_ARRAY_TASK_ID", "1")]).unwrap_err());
        assert!(e.contains("SLURM_ARRAY_TASK_COUNT"), "{e}");
        // Kubernetes: the index is 0-based; the count comes from DEEPGUARD_SHARDS.
        let (s, _) = env(&[("JOB_COMPLETION_INDEX", "2"), (COUNT_VAR, "3")]).unwrap().unwrap();
        assert_eq!(s, Shard { index: 3, count: 3 });
        assert_eq!(env(&[("JOB_COMPLETION_INDEX", "2")]).unwrap(), None);
        for bad in [&[("JOB_COMPLETION_INDEX", "3"), (COUNT_VAR, "3")][..], &[(COUNT_VAR, "3")], &[("JOB_COMPLETION_INDEX", "x"), (COUNT_VAR, "3")]] {
            let e = format!("{:#}", env(bad).unwrap_err());
            assert!(e.contains(bad[0].0), "{bad:?}: {e}");
        }
    }

    /// The split is a partition, balanced by cost over the benchmark, and a filter takes the same
    /// scenarios of every shard.
    #[test]
    fn split_is_a_balanced_partition_stable_under_filtering() {
        let mut all = vec![];
        for cwe in ["022", "078", "079", "089", "502"] {
            for i in 0..3 {
                all.push(sc(&format!("base/cwe-{cwe}/{i}-py"), Lang::Py));
            }
        }
        for cwe in ["125", "190", "787"] {
            for i in 0..3 {
                all.push(sc(&format!("base/cwe-{cwe}/{i}-c"), Lang::C));
            }
        }
        all.push(Scenario { unit_test: None, ..sc("untrain/cwe-020/0-py", Lang::Py) });
        for n in 1..=5 {
            let of = assign(&all, n);
            assert_eq!(of.len(), all.len());
            let mut load = vec![0u32; n];
            let mut c_count = vec![0usize; n];
            for s in &all {
                load[of[&s.id] - 1] += cost(s);
                c_count[of[&s.id] - 1] += (s.lang == Lang::C) as usize;
            }
            let (lo, hi) = (*load.iter().min().unwrap(), *load.iter().max().unwrap());
            // LPT: the spread is at most the largest single cost.
            assert!(hi - lo <= 5, "{n} shards: loads {load:?}");
            // The costly C scenarios are spread evenly too.
            assert!(c_count.iter().max().unwrap() - c_count.iter().min().unwrap() <= 1, "{n} shards: C per shard {c_count:?}");
        }
        // One CWE's scenarios go to different shards.
        let of = assign(&all, 3);
        let shards: std::collections::BTreeSet<usize> = (0..3).map(|i| of[&format!("base/cwe-089/{i}-py")]).collect();
        assert_eq!(shards.len(), 3);
        // Deterministic, and independent of the listing's order.
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(assign(&rev, 3), of);
    }

    #[test]
    fn select_uses_the_whole_benchmark_so_filters_commute() {
        let t = tempfile::tempdir().unwrap();
        for (id, lang) in [("base/cwe-089/0-py", "py"), ("base/cwe-089/1-py", "py"), ("base/cwe-089/2-py", "py"), ("base/cwe-787/0-c", "c"), ("base/cwe-787/1-c", "c")] {
            let d = t.path().join("sec_eval").join(id);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("info.json"), format!("{{\"language\": \"{lang}\"}}")).unwrap();
            std::fs::write(d.join(format!("file_context.{lang}")), "").unwrap();
            std::fs::write(d.join(format!("func_context.{lang}")), id).unwrap();
        }
        let all = crate::scenario::discover(t.path(), &[]).unwrap();
        let ids = |v: Vec<Scenario>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let mut union = vec![];
        for i in 1..=3 {
            let shard = Shard { index: i, count: 3 };
            let whole = select(t.path(), &all, shard).unwrap();
            // Filtering then splitting = splitting then filtering.
            let only_089: Vec<Scenario> = all.iter().filter(|s| s.id.contains("089")).cloned().collect();
            let filtered = ids(select(t.path(), &only_089, shard).unwrap());
            assert_eq!(filtered, ids(whole.clone()).into_iter().filter(|id| id.contains("089")).collect::<Vec<_>>());
            union.extend(ids(whole));
        }
        union.sort();
        assert_eq!(union, ids(all));
    }
}
