//! The selection / confirmation protocol: a fixed split of a benchmark's scenarios by CWE, so
//! that settings are chosen on one part and every headline figure comes from the other, whose
//! CWEs the settings never saw.
//!
//! The rule (documented in docs/loops.md and stable across releases): within each split folder
//! of the benchmark (`base`, `untrain`, …), its CWEs in numeric order go alternately to the
//! selection part (1st, 3rd, 5th, …) and the confirmation part (2nd, 4th, …). The parts are
//! computed over the whole benchmark, so a scenario filter (`-s`) never moves a CWE from one part
//! to the other. On the dev set (35 scenarios, 13 CWEs) this gives selection = CWE-022, 079,
//! 125, 416, 787 and (held out of training) 020, 502: 18 scenarios; confirmation = CWE-078, 089,
//! 190, 476 and (held out) 119, 732: 17 scenarios. The SVEN/SafeCoder `val` pairs belong to
//! selection too (training's early stopping and the analyzer's diagnostics read them).

use crate::scenario::Scenario;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Which part of the scenarios a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Every scenario.
    #[default]
    All,
    /// The part settings are chosen on.
    Selection,
    /// The part every headline figure is read from.
    Confirmation,
}

/// The CWE number of a `CWE-089` / `cwe-89` string (None: not a CWE id).
fn number(cwe: &str) -> Option<u32> {
    cwe.to_ascii_lowercase().strip_prefix("cwe-")?.parse().ok()
}

/// Each (split folder, CWE) of `all` (the whole benchmark) and its part.
pub fn parts(all: &[Scenario]) -> BTreeMap<(String, String), Part> {
    let mut by_split: BTreeMap<&str, BTreeSet<(u32, &str)>> = BTreeMap::new();
    for s in all {
        by_split.entry(&s.split).or_default().insert((number(&s.cwe).unwrap_or(u32::MAX), &s.cwe));
    }
    let mut out = BTreeMap::new();
    for (split, cwes) in by_split {
        for (i, (_, cwe)) in cwes.into_iter().enumerate() {
            out.insert((split.to_string(), cwe.to_string()), if i % 2 == 0 { Part::Selection } else { Part::Confirmation });
        }
    }
    out
}

/// The scenarios of `chosen` in `part`, the parts computed over `all` (the whole benchmark).
pub fn narrow(all: &[Scenario], chosen: Vec<Scenario>, part: Part) -> Vec<Scenario> {
    if part == Part::All {
        return chosen;
    }
    let parts = parts(all);
    chosen.into_iter().filter(|s| parts.get(&(s.split.clone(), s.cwe.clone())) == Some(&part)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::discover_all;

    fn dev() -> Vec<Scenario> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
        discover_all(&root, &[]).expect("the dev benchmark at ../shared/data/eval").0
    }

    fn cwes(s: &[Scenario]) -> Vec<String> {
        let mut c: Vec<String> = s.iter().map(|s| format!("{}/{}", s.split, s.cwe)).collect();
        c.dedup();
        c
    }

    #[test]
    fn the_dev_split_alternates_cwes_within_each_folder_and_covers_every_scenario_once() {
        let all = dev();
        let sel = narrow(&all, all.clone(), Part::Selection);
        let conf = narrow(&all, all.clone(), Part::Confirmation);
        assert_eq!(sel.len() + conf.len(), all.len());
        assert_eq!((sel.len(), conf.len()), (18, 17));
        assert_eq!(cwes(&sel), ["base/CWE-022", "base/CWE-079", "base/CWE-125", "base/CWE-416", "base/CWE-787", "untrain/CWE-020", "untrain/CWE-502"]);
        assert_eq!(cwes(&conf), ["base/CWE-078", "base/CWE-089", "base/CWE-190", "base/CWE-476", "untrain/CWE-119", "untrain/CWE-732"]);
        assert!(narrow(&all, all.clone(), Part::All).len() == all.len());
    }

    #[test]
    fn a_filter_never_moves_a_cwe_to_the_other_part() {
        let all = dev();
        // Without CWE-022 in the list, CWE-078 would be first in base and land in selection if
        // the parts were computed over the filtered list.
        let chosen: Vec<Scenario> = all.iter().filter(|s| s.cwe != "CWE-022").cloned().collect();
        let conf = narrow(&all, chosen, Part::Confirmation);
        assert!(conf.iter().any(|s| s.cwe == "CWE-078"));
        assert_eq!(conf.len(), 17);
    }
}
