//! Paired vulnerable / fixed code (SVEN, SafeCoder), normalised to one [`Pair`] type, and the
//! windowing that fits a pair into a token budget around its changed span.
//!
//! Both datasets are JSON lines with `func_src_before` (vulnerable), `func_src_after` (fixed),
//! `vul_type` (CWE), `file_name` and `char_changes` (`{"deleted": [{char_start, char_end, chars}],
//! "added": [...]}`, offsets in Unicode code points of the before / after text). Offsets are
//! converted to byte offsets here and checked against `chars`. A few SafeCoder lines have no
//! `char_changes`; their changed span is then the common-prefix / common-suffix difference.

use anyhow::{anyhow, bail, Context, Result};
use deepguard_runtime::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A CWE id. `CWE-89`, `cwe-089` and `89` parse to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cwe(pub u32);

impl Cwe {
    pub fn parse(s: &str) -> Result<Cwe> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let digits = lower.strip_prefix("cwe").map(|r| r.trim_start_matches(['-', '_', ' '])).unwrap_or(&lower);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            bail!("`{t}` is not a CWE id (expected e.g. CWE-89, cwe-089 or 89)");
        }
        let n: u32 = digits.parse().map_err(|_| anyhow!("`{t}`: CWE number out of range"))?;
        if n == 0 {
            bail!("`{t}` is not a CWE id (CWE-0 does not exist)");
        }
        Ok(Cwe(n))
    }

    /// `cwe-089`: the dataset's file naming, used for file names.
    pub fn slug(&self) -> String {
        format!("cwe-{:03}", self.0)
    }

    /// The weakness in a few words, for the CWEs of the SVEN, SafeCoder and CodeGuard+ data
    /// (None for others).
    pub fn title(&self) -> Option<&'static str> {
        Some(match self.0 {
            20 => "improper input validation",
            22 => "path traversal",
            78 => "OS command injection",
            79 => "cross-site scripting",
            89 => "SQL injection",
            94 => "code injection",
            119 => "out-of-bounds memory access",
            125 => "out-of-bounds read",
            190 => "integer overflow",
            200 => "exposure of sensitive information",
            306 => "missing authentication",
            327 => "broken or risky cryptography",
            352 => "cross-site request forgery",
            377 => "insecure temporary file",
            416 => "use after free",
            434 => "unrestricted file upload",
            476 => "NULL pointer dereference",
            502 => "deserialization of untrusted data",
            522 => "insufficiently protected credentials",
            601 => "open redirect",
            611 => "XML external entities",
            732 => "incorrect permission assignment",
            787 => "out-of-bounds write",
            798 => "hard-coded credentials",
            918 => "server-side request forgery",
            _ => return None,
        })
    }
}

impl fmt::Display for Cwe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CWE-{}", self.0)
    }
}

/// One vulnerable / fixed pair.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// `file:line` of the record.
    pub source: String,
    pub language: String,
    pub cwe: Cwe,
    pub vulnerable: String,
    pub fixed: String,
    /// Changed (deleted) byte spans in `vulnerable`.
    pub vulnerable_spans: Vec<Range<usize>>,
    /// Changed (added) byte spans in `fixed`.
    pub fixed_spans: Vec<Range<usize>>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Vulnerable,
    Fixed,
}

impl Pair {
    pub fn text(&self, side: Side) -> &str {
        match side {
            Side::Vulnerable => &self.vulnerable,
            Side::Fixed => &self.fixed,
        }
    }

    /// The byte range covering all changes of one side. A side with no change of its own (a pure
    /// insertion on the other side) gets the empty range at the common-prefix boundary.
    pub fn changed_hull(&self, side: Side) -> Range<usize> {
        let spans = match side {
            Side::Vulnerable => &self.vulnerable_spans,
            Side::Fixed => &self.fixed_spans,
        };
        match (spans.iter().map(|s| s.start).min(), spans.iter().map(|s| s.end).max()) {
            (Some(a), Some(b)) => a..b,
            _ => prefix_suffix_diff(&self.vulnerable, &self.fixed, side),
        }
    }
}

/// The differing middle of `a` vs `b` after removing their common prefix and suffix, on `side`.
pub fn prefix_suffix_diff(vulnerable: &str, fixed: &str, side: Side) -> Range<usize> {
    let (x, y) = (vulnerable.as_bytes(), fixed.as_bytes());
    let mut p = x.iter().zip(y).take_while(|(a, b)| a == b).count();
    let max_s = x.len().min(y.len()) - p;
    let s = x.iter().rev().zip(y.iter().rev()).take(max_s).take_while(|(a, b)| a == b).count();
    let t = match side {
        Side::Vulnerable => vulnerable,
        Side::Fixed => fixed,
    };
    while !t.is_char_boundary(p) {
        p -= 1;
    }
    let mut end = t.len() - s;
    while !t.is_char_boundary(end) {
        end += 1;
    }
    p..end.max(p)
}

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum OnMalformed {
    /// Report it (file:line: problem) and go on without it.
    Skip,
    /// Stop with an error naming the file and line.
    Refuse,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub pairs: Vec<Pair>,
    /// `file:line: problem`, one per skipped line.
    pub skipped: Vec<String>,
}

/// Reads pairs from files or folders (every `*.jsonl` in a folder, sorted by name).
pub fn load(paths: &[PathBuf], on_malformed: OnMalformed) -> Result<Loaded> {
    let mut out = Loaded::default();
    for p in paths {
        let files = if p.is_dir() {
            let mut f: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read data folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            f.sort();
            if f.is_empty() {
                bail!("{}: no *.jsonl files in this folder", p.display());
            }
            f
        } else {
            vec![p.clone()]
        };
        for f in files {
            read_jsonl(&f, on_malformed, &mut out)?;
        }
    }
    Ok(out)
}

fn read_jsonl(path: &Path, on_malformed: OnMalformed, out: &mut Loaded) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read data file {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        match parse_record(line, &at) {
            Ok(p) => out.pairs.push(p),
            Err(e) => match on_malformed {
                OnMalformed::Skip => out.skipped.push(format!("{at}: {e:#}")),
                OnMalformed::Refuse => bail!("{at}: {e:#} (pass --on-malformed skip to skip such lines)"),
            },
        }
    }
    Ok(())
}

/// Parses one JSON line of SVEN / SafeCoder into a [`Pair`].
pub fn parse_record(line: &str, source: &str) -> Result<Pair> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let field = |k: &str| -> Result<&str> { v.get(k).and_then(|x| x.as_str()).ok_or_else(|| anyhow!("field `{k}` is missing or not a string")) };
    let vulnerable = field("func_src_before")?.to_string();
    let fixed = field("func_src_after")?.to_string();
    if vulnerable == fixed {
        bail!("vulnerable and fixed code are identical");
    }
    let cwe = Cwe::parse(field("vul_type")?)?;
    let file_name = v.get("file_name").and_then(|x| x.as_str()).unwrap_or("");
    let (vulnerable_spans, fixed_spans) = match v.get("char_changes") {
        None | Some(serde_json::Value::Null) => (vec![], vec![]),
        Some(cc) => (
            spans(cc, "deleted", &vulnerable).context("char_changes.deleted")?,
            spans(cc, "added", &fixed).context("char_changes.added")?,
        ),
    };
    Ok(Pair {
        source: source.to_string(),
        language: language_of(file_name),
        cwe,
        vulnerable,
        fixed,
        vulnerable_spans,
        fixed_spans,
        description: v.get("description").and_then(|x| x.as_str()).map(str::to_string),
    })
}

/// Code-point spans of `char_changes[key]`, converted to byte spans of `text` and checked.
fn spans(cc: &serde_json::Value, key: &str, text: &str) -> Result<Vec<Range<usize>>> {
    let list = cc.get(key).and_then(|x| x.as_array()).ok_or_else(|| anyhow!("`{key}` is missing or not a list"))?;
    // byte offset of every code point, plus the end
    let offs: Vec<usize> = text.char_indices().map(|(b, _)| b).chain(std::iter::once(text.len())).collect();
    let n_chars = offs.len() - 1;
    let mut out = Vec::with_capacity(list.len());
    for (j, s) in list.iter().enumerate() {
        let get = |k: &str| s.get(k).and_then(|x| x.as_u64()).map(|x| x as usize).ok_or_else(|| anyhow!("entry {j}: `{k}` is missing"));
        let (a, b) = (get("char_start")?, get("char_end")?);
        if a > b || b > n_chars {
            bail!("entry {j}: span {a}..{b} lies outside the code ({n_chars} characters)");
        }
        let r = offs[a]..offs[b];
        if let Some(chars) = s.get("chars").and_then(|x| x.as_str()) {
            if &text[r.clone()] != chars {
                bail!("entry {j}: span {a}..{b} does not hold the recorded characters");
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// Language from a file extension.
pub fn language_of(file_name: &str) -> String {
    let ext = file_name.rsplit_once('.').map(|x| x.1).unwrap_or("");
    match ext {
        "py" => "python",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "C" | "hpp" | "hh" => "cpp",
        "js" | "jsx" | "mjs" => "javascript",
        "ts" | "tsx" => "typescript",
        "rb" => "ruby",
        "go" => "go",
        "java" => "java",
        "php" => "php",
        _ => "unknown",
    }
    .to_string()
}

/// How a pair's sides are cut to a token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Align {
    /// The window is centred on the changed span.
    Center,
    /// The window ends with the last changed token: its last token is the point where the model
    /// has just written the secure or the vulnerable code (the analogue of the last prompt token).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Token budget per side; 0 keeps whole functions.
    pub budget: usize,
    pub align: Align,
    /// Cut both sides of a pair to the same number of tokens (the shorter side's), which removes
    /// length as a cue.
    pub equal_length: bool,
}

/// Token range `lo..hi` of `n_tokens` to keep: at most `budget` tokens (0 = all) containing the
/// changed token range `changed` (clipped to the budget from its start when it is longer).
pub fn window(n_tokens: usize, changed: Range<usize>, budget: usize, align: Align) -> Range<usize> {
    let (cs, ce) = (changed.start.min(n_tokens), changed.end.min(n_tokens).max(changed.start.min(n_tokens)));
    if align == Align::End {
        let hi = ce.max((cs + 1).min(n_tokens));
        let lo = if budget == 0 { 0 } else { hi.saturating_sub(budget) };
        return lo..hi;
    }
    if budget == 0 || n_tokens <= budget {
        return 0..n_tokens;
    }
    if ce - cs >= budget {
        return cs..cs + budget;
    }
    let extra = budget - (ce - cs);
    let lo = cs.saturating_sub(extra / 2);
    let hi = (lo + budget).min(n_tokens);
    hi - budget..hi
}

/// Indices of the tokens (given as byte offsets) that overlap `span`; an empty span maps to the
/// token that contains (or follows) its position.
pub fn tokens_overlapping(offsets: &[(usize, usize)], span: &Range<usize>) -> Range<usize> {
    if offsets.is_empty() {
        return 0..0;
    }
    if span.is_empty() {
        let i = offsets.iter().position(|o| o.1 > span.start).unwrap_or(offsets.len() - 1);
        return i..i + 1;
    }
    let first = offsets.iter().position(|o| o.1 > span.start).unwrap_or(offsets.len() - 1);
    let last = offsets.iter().rposition(|o| o.0 < span.end).unwrap_or(first).max(first);
    first..last + 1
}

/// One side of a pair, tokenised and windowed.
#[derive(Debug, Clone)]
pub struct Windowed {
    pub ids: Vec<u32>,
    /// Changed tokens, as indices into `ids`.
    pub changed: Range<usize>,
    /// Token count of the whole function.
    pub full_tokens: usize,
}

fn tokenize_side(tok: &Tokenizer, text: &str, hull: &Range<usize>) -> Result<(Vec<u32>, Vec<(usize, usize)>, Range<usize>)> {
    let enc = tok.inner().encode(text, false).map_err(|e| anyhow!("tokenizer: {e}"))?;
    let ids = enc.get_ids().to_vec();
    let offs = enc.get_offsets().to_vec();
    let changed = tokens_overlapping(&offs, hull);
    Ok((ids, offs, changed))
}

/// Tokenises both sides of a pair and cuts them by `spec`. BOS is prepended when the model asks
/// for it (outside the budget).
pub fn window_pair(tok: &Tokenizer, pair: &Pair, spec: &WindowSpec) -> Result<(Windowed, Windowed)> {
    let mut sides = Vec::with_capacity(2);
    for side in [Side::Vulnerable, Side::Fixed] {
        let hull = pair.changed_hull(side);
        let (ids, _, changed) = tokenize_side(tok, pair.text(side), &hull)?;
        if ids.is_empty() {
            bail!("{}: the {:?} code tokenises to nothing", pair.source, side);
        }
        sides.push((ids, changed));
    }
    let mut ranges: Vec<Range<usize>> = sides.iter().map(|(ids, c)| window(ids.len(), c.clone(), spec.budget, spec.align)).collect();
    if spec.equal_length {
        let m = ranges.iter().map(|r| r.len()).min().unwrap_or(0);
        // Each side already has at least m tokens in front of (or around) its change, so a
        // budget of m gives exactly m tokens on both sides.
        ranges = sides.iter().map(|(ids, c)| window(ids.len(), c.clone(), m, spec.align)).collect();
    }
    let bos: Vec<u32> = if tok.add_bos { tok.bos_id.into_iter().collect() } else { vec![] };
    let mut out = sides.into_iter().zip(ranges).map(|((ids, c), r)| {
        let mut w = bos.clone();
        w.extend_from_slice(&ids[r.clone()]);
        let shift = |i: usize| (i.clamp(r.start, r.end) - r.start) + bos.len();
        Windowed { changed: shift(c.start)..shift(c.end), full_tokens: ids.len(), ids: w }
    });
    let v = out.next().unwrap();
    let f = out.next().unwrap();
    Ok((v, f))
}

/// A short hex digest of `salt` and the pairs' contents (CWE, both sides, changed spans): keys
/// on-disk caches and records which data an artefact was built from.
pub fn pairs_hash(pairs: &[Pair], salt: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b";");
    for p in pairs {
        h.update(p.cwe.0.to_le_bytes());
        h.update((p.vulnerable.len() as u64).to_le_bytes());
        h.update(p.vulnerable.as_bytes());
        h.update((p.fixed.len() as u64).to_le_bytes());
        h.update(p.fixed.as_bytes());
        for s in p.vulnerable_spans.iter().chain(&p.fixed_spans) {
            h.update((s.start as u64).to_le_bytes());
            h.update((s.end as u64).to_le_bytes());
        }
    }
    h.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Pairs per CWE, in CWE order.
pub fn cwes(pairs: &[Pair]) -> Vec<(Cwe, usize)> {
    let mut m = std::collections::BTreeMap::new();
    for p in pairs {
        *m.entry(p.cwe).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

/// Keeps at most `n` pairs per CWE (the first ones, in file order).
pub fn limit_per_cwe(pairs: Vec<Pair>, n: usize) -> Vec<Pair> {
    let mut seen = std::collections::HashMap::new();
    pairs
        .into_iter()
        .filter(|p| {
            let c = seen.entry(p.cwe).or_insert(0usize);
            *c += 1;
            *c <= n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwe_ids_normalise() {
        for s in ["CWE-89", "cwe-089", "89", " Cwe_89 ", "CWE 0089"] {
            assert_eq!(Cwe::parse(s).unwrap(), Cwe(89), "{s}");
        }
        assert_eq!(Cwe(89).slug(), "cwe-089");
        assert_eq!(Cwe(1321).slug(), "cwe-1321");
        assert_eq!(Cwe(89).to_string(), "CWE-89");
        for bad in ["", "cwe-", "sql", "CWE-8x9", "0"] {
            assert!(Cwe::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_contain_the_change_and_respect_the_budget() {
        // centred
        assert_eq!(window(100, 50..52, 10, Align::Center), 46..56);
        assert_eq!(window(100, 0..2, 10, Align::Center), 0..10);
        assert_eq!(window(100, 97..99, 10, Align::Center), 90..100);
        assert_eq!(window(100, 20..60, 10, Align::Center), 20..30);
        assert_eq!(window(8, 3..4, 10, Align::Center), 0..8);
        assert_eq!(window(100, 50..52, 0, Align::Center), 0..100);
        // ending at the change
        assert_eq!(window(100, 50..52, 10, Align::End), 42..52);
        assert_eq!(window(100, 3..5, 10, Align::End), 0..5);
        assert_eq!(window(100, 50..52, 0, Align::End), 0..52);
        // empty change: still one token
        assert_eq!(window(100, 50..50, 10, Align::End), 41..51);
    }

    #[test]
    fn tokens_overlapping_spans() {
        let offs = [(0, 3), (3, 4), (4, 9), (9, 12)];
        assert_eq!(tokens_overlapping(&offs, &(3..5)), 1..3);
        assert_eq!(tokens_overlapping(&offs, &(0..12)), 0..4);
        assert_eq!(tokens_overlapping(&offs, &(10..11)), 3..4);
        assert_eq!(tokens_overlapping(&offs, &(4..4)), 2..3);
    }

    #[test]
    fn prefix_suffix_diff_finds_the_change() {
        let (v, f) = ("a = q % x\n", "a = q, (x,)\n");
        assert_eq!(&v[prefix_suffix_diff(v, f, Side::Vulnerable)], " % x");
        assert_eq!(&f[prefix_suffix_diff(v, f, Side::Fixed)], ", (x,)");
        // pure insertion: empty range on the vulnerable side
        let (v, f) = ("ab", "aXb");
        assert_eq!(prefix_suffix_diff(v, f, Side::Vulnerable), 1..1);
        assert_eq!(prefix_suffix_diff(v, f, Side::Fixed), 1..2);
    }

    #[test]
    fn records_parse_with_code_point_offsets() {
        // "é" is two bytes: code-point offsets must become byte offsets
        let line = r#"{"func_src_before":"s = 'é' + x","func_src_after":"s = 'é' + esc(x)","vul_type":"cwe-079","file_name":"a/b.py",
            "char_changes":{"deleted":[{"char_start":10,"char_end":11,"chars":"x"}],"added":[{"char_start":10,"char_end":16,"chars":"esc(x)"}]}}"#;
        let p = parse_record(line, "t:1").unwrap();
        assert_eq!(p.cwe, Cwe(79));
        assert_eq!(p.language, "python");
        assert_eq!(&p.vulnerable[p.vulnerable_spans[0].clone()], "x");
        assert_eq!(&p.fixed[p.fixed_spans[0].clone()], "esc(x)");
        // wrong chars, out of range, missing field, identical sides, bad CWE
        let bad = [
            line.replace(r#""chars":"x""#, r#""chars":"y""#),
            line.replace(r#""char_end":11"#, r#""char_end":99"#),
            line.replace(r#""func_src_after""#, r#""other""#),
            r#"{"func_src_before":"a","func_src_after":"a","vul_type":"cwe-79"}"#.to_string(),
            line.replace("cwe-079", "xss"),
            "{not json".to_string(),
        ];
        for b in &bad {
            assert!(parse_record(b, "t:1").is_err(), "{b}");
        }
    }
}
