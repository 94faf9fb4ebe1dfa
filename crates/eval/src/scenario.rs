//! Reading a benchmark folder in the SVEN / CodeGuard+ layout:
//!
//! ```text
//! ROOT/sec_eval/<split>/<cwe>/<scenario>/{file_context.*, func_context.*, info.json}
//! ROOT/unit_test/<cwe>/<scenario>/functional.py   (+ ROOT/unit_test/test_utils.py)
//! ```
//!
//! Any folder in this layout can be evaluated; nothing about the scenarios is hard-coded.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Py,
    C,
}

impl Lang {
    /// The line-comment marker.
    pub fn comment(self) -> &'static str {
        match self {
            Lang::Py => "#",
            Lang::C => "//",
        }
    }
    pub fn ext(self) -> &'static str {
        match self {
            Lang::Py => "py",
            Lang::C => "c",
        }
    }
    /// A language's name as info.json, a request or a code fence's tag writes it.
    pub fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "py" | "python" | "python3" => Some(Lang::Py),
            "c" | "h" => Some(Lang::C),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    /// `<split>/<cwe>/<scenario>`, e.g. `base/cwe-089/0-py`: unique within a benchmark.
    pub id: String,
    pub split: String,
    /// Normalised `CWE-089` form.
    pub cwe: String,
    pub name: String,
    pub lang: Lang,
    pub dir: PathBuf,
    pub file_context: String,
    pub func_context: String,
    /// The CodeQL query the benchmark's authors used (path as written in info.json).
    pub check_ql: Option<String>,
    pub description: Option<String>,
    /// `unit_test/<cwe>/<scenario>` when it has a `functional.py`.
    pub unit_test: Option<PathBuf>,
}

impl Scenario {
    /// The prompt the model continues: file_context + func_context.
    pub fn prompt(&self) -> String {
        format!("{}{}", self.file_context, self.func_context)
    }

    /// Loads one scenario folder; `root` is the benchmark root (for the unit test lookup).
    pub fn load(root: &Path, dir: &Path) -> Result<Scenario> {
        let info_path = dir.join("info.json");
        let info_text = std::fs::read_to_string(&info_path).with_context(|| format!("{}: cannot read", info_path.display()))?;
        let info: serde_json::Value =
            serde_json::from_str(&info_text).with_context(|| format!("{}: not valid JSON", info_path.display()))?;
        let field = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let lang_s = field("language").with_context(|| format!("{}: no \"language\" field", info_path.display()))?;
        let lang = Lang::parse(&lang_s).with_context(|| format!("{}: unsupported language {lang_s:?} (py, c)", info_path.display()))?;
        let read = |stem: &str| -> Result<String> {
            let p = dir.join(format!("{stem}.{}", lang.ext()));
            std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))
        };
        let file_context = read("file_context")?;
        let func_context = read("func_context")?;
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let cwe_dir = dir.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let split = dir
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let cwe = normalise_cwe(&field("cwe").unwrap_or_else(|| cwe_dir.clone()));
        let ut = root.join("unit_test").join(&cwe_dir).join(&name);
        let unit_test = ut.join("functional.py").exists().then_some(ut);
        Ok(Scenario {
            id: format!("{split}/{cwe_dir}/{name}"),
            split,
            cwe,
            name,
            lang,
            dir: dir.to_path_buf(),
            file_context,
            func_context,
            check_ql: field("check_ql"),
            description: field("description"),
            unit_test,
        })
    }
}

/// `cwe-89`, `CWE-089`, `cwe-089` → `CWE-089`.
pub fn normalise_cwe(s: &str) -> String {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    match digits.parse::<u32>() {
        Ok(n) => format!("CWE-{n:03}"),
        Err(_) => s.to_string(),
    }
}

/// All scenarios under `root/sec_eval` (or `root` itself when it has no `sec_eval`), sorted by
/// id, keeping those whose id contains one of `filters` (all when empty). Scenarios in a language
/// the harness cannot run are skipped with a warning on stderr (see [`discover_all`]).
pub fn discover(root: &Path, filters: &[String]) -> Result<Vec<Scenario>> {
    let (found, skipped) = discover_all(root, filters)?;
    for s in &skipped {
        eprintln!("warning: skipped {s}");
    }
    Ok(found)
}

/// [`discover`], returning the skipped scenarios (`<folder>: <why>`) instead of printing them.
pub fn discover_all(root: &Path, filters: &[String]) -> Result<(Vec<Scenario>, Vec<String>)> {
    if !root.is_dir() {
        bail!("{}: benchmark folder not found", root.display());
    }
    let base = if root.join("sec_eval").is_dir() { root.join("sec_eval") } else { root.to_path_buf() };
    let mut dirs = Vec::new();
    walk(&base, &mut dirs)?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for d in dirs {
        let s = match Scenario::load(root, &d) {
            Ok(s) => s,
            Err(e) if format!("{e:#}").contains("unsupported language") => {
                skipped.push(format!("{e:#}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        if filters.is_empty() || filters.iter().any(|f| s.id.contains(f.as_str())) {
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    skipped.sort();
    if out.is_empty() {
        bail!("{}: no scenario folders (with info.json) found{}", root.display(), if filters.is_empty() { "" } else { " matching the filter" });
    }
    Ok((out, skipped))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if dir.join("info.json").is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for e in rd {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwe_names_normalise() {
        assert_eq!(normalise_cwe("cwe-89"), "CWE-089");
        assert_eq!(normalise_cwe("CWE-022"), "CWE-022");
        assert_eq!(normalise_cwe("cwe-416"), "CWE-416");
    }

    #[test]
    fn a_scenario_in_an_unsupported_language_is_skipped_not_fatal() {
        let t = tempfile::tempdir().unwrap();
        for (name, lang) in [("0-py", "py"), ("1-cpp", "cpp")] {
            let d = t.path().join("sec_eval/base/cwe-787").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("info.json"), format!("{{\"language\": \"{lang}\", \"cwe\": \"CWE-787\"}}")).unwrap();
            std::fs::write(d.join(format!("file_context.{lang}")), "x").unwrap();
            std::fs::write(d.join(format!("func_context.{lang}")), "y").unwrap();
        }
        let (found, skipped) = discover_all(t.path(), &[]).unwrap();
        assert_eq!(found.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["base/cwe-787/0-py"]);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("1-cpp") && skipped[0].contains("unsupported language \"cpp\""), "{skipped:?}");
    }

    #[test]
    fn reads_a_synthetic_benchmark() {
        let t = tempfile::tempdir().unwrap();
        let sc = t.path().join("sec_eval/x/cwe-78/0-py");
        std::fs::create_dir_all(&sc).unwrap();
        std::fs::write(sc.join("info.json"), r#"{"language":"py","cwe":"CWE-078"}"#).unwrap();
        std::fs::write(sc.join("file_context.py"), "import os\n").unwrap();
        std::fs::write(sc.join("func_context.py"), "def f():\n").unwrap();
        let c = t.path().join("sec_eval/x/cwe-787/1-c");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("info.json"), r#"{"language":"c"}"#).unwrap();
        std::fs::write(c.join("file_context.c"), "").unwrap();
        std::fs::write(c.join("func_context.c"), "int main(){").unwrap();
        std::fs::create_dir_all(t.path().join("unit_test/cwe-78/0-py")).unwrap();
        std::fs::write(t.path().join("unit_test/cwe-78/0-py/functional.py"), "").unwrap();
        let all = discover(t.path(), &[]).unwrap();
        assert_eq!(all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["x/cwe-78/0-py", "x/cwe-787/1-c"]);
        assert_eq!(all[0].prompt(), "import os\ndef f():\n");
        assert_eq!(all[0].cwe, "CWE-078");
        assert!(all[0].unit_test.is_some());
        assert_eq!(all[1].cwe, "CWE-787", "CWE falls back to the folder name");
        assert_eq!(all[1].lang, Lang::C);
        assert!(all[1].unit_test.is_none());
        assert_eq!(discover(t.path(), &["787".into()]).unwrap().len(), 1);
        // A broken info.json names the file.
        std::fs::write(c.join("info.json"), "{").unwrap();
        let e = format!("{:#}", discover(t.path(), &[]).unwrap_err());
        assert!(e.contains("cwe-787/1-c/info.json") && e.contains("not valid JSON"), "{e}");
    }
}
