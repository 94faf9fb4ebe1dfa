//! One description of a generation method: [`MethodSpec`]. The command line (`--method`, and
//! `--guard/--steer/--alpha/...` as shorthands), `compare --method`, a `--config` TOML file and
//! the server's per-request `deepguard` field all end in one of these; it parses from and prints
//! to one text form, and names the method's run folder ([`MethodSpec::name`]).
//!
//! The text form: parts joined by `+`, each a kind, a colon and its settings.
//!
//! ```text
//! base                                         the model as it is
//! guard:DIR[:reference][:no-prior][@STRENGTH]  DeepGuard (bias rule paper by default, strength 1)
//! steer:FILE.gguf[:layer=L][@ALPHA]            one steering vector (alpha 2 by default)
//! steer:DIR:CWE|auto[:layer=L][@ALPHA]         a folder's vector for a CWE, or probe-then-steer
//! prompt:secure                                a fixed security reminder in the prompt
//! prompt:cwe[:DIR]                             a reminder naming the weakness DIR's probe routes to
//! rerank:K[:static|analyzer|both][:t=T]       keep the most secure of K candidates
//! repair:R[:t=T]                               check with the static tools, feed findings back, up to R rounds
//! ```
//!
//! e.g. `guard:runs/guard:reference@0.5+steer:runs/steer:auto@2+prompt:secure+rerank:4:both`.
//! Options after the path may come in any order; the printed form is canonical (defaults left
//! out, parts in the order above), and parsing it gives the same spec back.

use crate::data::Cwe;
use crate::prior::BiasRule;
use crate::steer::{Selector, DEFAULT_ALPHA};
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// DeepGuard at inference: the guard's adapters, and (with its prior) the prompt-conditioned
/// logit bias.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSpec {
    /// A folder written by `deepguard train`.
    pub dir: PathBuf,
    /// Scale of the logit bias.
    pub strength: f32,
    pub rule: BiasRule,
    /// Add the security prior's logit bias (false: the adapters alone, no prompt scoring).
    pub prior: bool,
}

/// Steering vectors (Surgical Repair).
#[derive(Debug, Clone, PartialEq)]
pub struct SteerSpec {
    /// A vector file or a folder of them (`deepguard steer build`).
    pub vectors: PathBuf,
    pub select: Selector,
    pub alpha: f64,
    /// Add the vector after this block instead of the block it was built at.
    pub layer: Option<usize>,
}

/// A prompt variant: the prompt the model sees is rewritten before tokenisation.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSpec {
    /// A short, fixed security reminder (a comment line, or a system line in chat).
    Secure,
    /// A reminder naming the weakness the routing probe of these vectors picks for the prompt
    /// (None: the folder of the spec's `steer` part).
    Cwe { vectors: Option<PathBuf> },
}

/// What scores a rerank's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    /// The static judge: fewest findings of the scenario's CWE.
    Static,
    /// The method's analyzer (a guard): highest security score of the candidate's code.
    Analyzer,
    /// Fewest static findings, then the highest analyzer score.
    Both,
}

impl Scorer {
    const NAMES: [(Scorer, &'static str); 3] = [(Scorer::Static, "static"), (Scorer::Analyzer, "analyzer"), (Scorer::Both, "both")];

    pub fn name(self) -> &'static str {
        Scorer::NAMES.iter().find(|(b, _)| *b == self).map_or("", |(_, n)| n)
    }
    pub fn parse(s: &str) -> Result<Scorer> {
        match Scorer::NAMES.iter().find(|(_, n)| *n == s) {
            Some((b, _)) => Ok(*b),
            None => bail!("unknown rerank scorer `{s}` (static, analyzer or both)"),
        }
    }
    pub fn uses_static(self) -> bool {
        self != Scorer::Analyzer
    }
    pub fn uses_analyzer(self) -> bool {
        self != Scorer::Static
    }
}

/// Keep the most secure of `k` candidates per kept sample (`deepguard_eval::rerank`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RerankSpec {
    pub k: usize,
    pub by: Scorer,
    /// The temperature of candidates 2..k (None: the kept sample's). The first candidate of a
    /// group is always drawn as the method alone would draw it.
    pub temperature: Option<f64>,
}

/// Check, repair and choose (`deepguard_eval::repair`): the static tools check each kept
/// sample; a flagged one is regenerated with the findings (rule, line, message) in the prompt,
/// until a version is unflagged or `rounds` are spent; the complete version with the fewest flags is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepairSpec {
    pub rounds: usize,
    /// The temperature of the repaired versions (None: the kept sample's).
    pub temperature: Option<f64>,
}

/// A method: any combination of a guard, steering, a prompt variant and a rerank; none of them
/// is the base model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodSpec {
    pub guard: Option<GuardSpec>,
    pub steer: Option<SteerSpec>,
    pub prompt: Option<PromptSpec>,
    pub rerank: Option<RerankSpec>,
    pub repair: Option<RepairSpec>,
}

/// The examples `--help` and the docs show; a test parses and prints each.
pub const EXAMPLES: &[&str] = &[
    "base",
    "guard:runs/guard",
    "guard:runs/guard@0.5",
    "guard:runs/guard:reference",
    "guard:runs/guard:no-prior",
    "steer:runs/steer:auto",
    "steer:runs/steer:cwe-089@1",
    "steer:runs/steer/all.gguf:layer=12@3",
    "prompt:secure",
    "prompt:cwe:runs/steer",
    "rerank:4",
    "rerank:4:both",
    "guard:runs/guard+steer:runs/steer:auto",
    "guard:runs/guard+prompt:secure",
    "steer:runs/steer:auto+prompt:cwe",
    "guard:runs/guard:reference@0.5+rerank:4:both",
    "rerank:4:t=0.8",
    "repair:2",
    "repair:2:t=0.6",
    "prompt:secure+rerank:4:t=0.8+repair:2",
    "guard:runs/guard+repair:3",
];

/// The text `--method` shows in `--help` (one text wherever the flag appears).
pub const HELP: &str = "A method: `base`, `guard:DIR[:reference][:no-prior][@STRENGTH]` (DeepGuard), \
`steer:FILE.gguf[@ALPHA]` or `steer:DIR:CWE|auto[:layer=L][@ALPHA]` (steering vectors), \
`prompt:secure` or `prompt:cwe[:DIR]` (a security reminder in the prompt), \
`rerank:K[:static|analyzer|both][:t=T]` (keep the most secure of K candidates, drawn at temperature T), \
`repair:R[:t=T]` (the static tools check each sample; flagged code is regenerated with the findings in the \
prompt, up to R rounds), or several joined by `+` (`guard:runs/guard+steer:runs/steer:auto@2`, \
`prompt:secure+rerank:4:t=0.8+repair:2`). compare takes it repeatedly; the first is the baseline.";

impl MethodSpec {
    /// The base model.
    pub fn base() -> Self {
        Self::default()
    }

    pub fn is_base(&self) -> bool {
        *self == Self::default()
    }

    /// The spec without its rerank and repair (what generates each candidate).
    pub fn without_rerank(&self) -> MethodSpec {
        MethodSpec { rerank: None, repair: None, ..self.clone() }
    }

    /// The spec without its repair loop (what generates each draft).
    pub fn without_repair(&self) -> MethodSpec {
        MethodSpec { repair: None, ..self.clone() }
    }

    /// The folder the `prompt:cwe` part routes with: its own, else the steering folder.
    pub fn routing_vectors(&self) -> Option<PathBuf> {
        match &self.prompt {
            Some(PromptSpec::Cwe { vectors: Some(v) }) => Some(v.clone()),
            Some(PromptSpec::Cwe { vectors: None }) => self.steer.as_ref().map(|s| s.vectors.clone()),
            _ => None,
        }
    }

    /// The method's run folder name (stable across releases, so stored runs resume): `base`,
    /// `guard-DIRNAME[-ref][-noprior]-sSTRENGTH`, `steer-DIRNAME-SEL[-lL]-aALPHA` (or the file
    /// stem for a file), `prompt-secure`, `prompt-cwe[-DIRNAME]`, joined by `+`; a rerank adds
    /// `-rerankK[-SCORER][-tT]`, a repair `-repairR[-tT]`.
    pub fn name(&self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = &self.guard {
            let rule = if g.rule == BiasRule::Paper { "" } else { "-ref" };
            let prior = if g.prior { "" } else { "-noprior" };
            parts.push(format!("guard-{}{rule}{prior}-s{}", file_name(&g.dir), g.strength));
        }
        if let Some(s) = &self.steer {
            let (src, sel) = match &s.select {
                Selector::File => (s.vectors.file_stem().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(), String::new()),
                Selector::Auto => (file_name(&s.vectors), "-auto".into()),
                Selector::Cwe(c) => (file_name(&s.vectors), format!("-{}", c.slug())),
            };
            let layer = s.layer.map(|l| format!("-l{l}")).unwrap_or_default();
            parts.push(format!("steer-{src}{sel}{layer}-a{}", s.alpha));
        }
        match &self.prompt {
            Some(PromptSpec::Secure) => parts.push("prompt-secure".into()),
            Some(PromptSpec::Cwe { vectors: Some(v) }) => parts.push(format!("prompt-cwe-{}", file_name(v))),
            Some(PromptSpec::Cwe { vectors: None }) => parts.push("prompt-cwe".into()),
            None => {}
        }
        let mut name = if parts.is_empty() { "base".to_string() } else { parts.join("+") };
        if let Some(r) = &self.rerank {
            name.push_str(&format!("-rerank{}", r.k));
            if r.by != Scorer::Static {
                name.push_str(&format!("-{}", r.by.name()));
            }
            if let Some(t) = r.temperature {
                name.push_str(&format!("-t{t}"));
            }
        }
        if let Some(r) = &self.repair {
            name.push_str(&format!("-repair{}", r.rounds));
            if let Some(t) = r.temperature {
                name.push_str(&format!("-t{t}"));
            }
        }
        name
    }

    /// Everything that defines the method, as recorded in a run folder's `config.json` (the
    /// same JSON earlier releases wrote for the methods they had, so their runs resume).
    pub fn settings(&self) -> serde_json::Value {
        let inner = self.without_rerank();
        let mut v = if inner.is_base() {
            serde_json::json!({"method": "base"})
        } else {
            let mut v = serde_json::json!({
                "method": inner.name(),
                "steer": inner.steer.as_ref().map(|s| {
                    let mut j = serde_json::json!({"vectors": s.arg(), "alpha": s.alpha});
                    if let Some(l) = s.layer {
                        j["layer"] = l.into();
                    }
                    j
                }),
                "guard": inner.guard.as_ref().map(|g| {
                    let mut j = serde_json::json!({"dir": g.dir, "bias_rule": g.rule, "strength": g.strength});
                    if !g.prior {
                        j["prior"] = false.into();
                    }
                    j
                }),
            });
            if let Some(p) = &inner.prompt {
                v["prompt"] = p.to_string().into();
            }
            v
        };
        if let Some(r) = &self.rerank {
            v = serde_json::json!({"method": v, "rerank": {"candidates": r.k, "by": r.by}});
            if let Some(t) = r.temperature {
                v["rerank"]["temperature"] = t.into();
            }
        }
        if let Some(r) = &self.repair {
            v = serde_json::json!({"method": v, "repair": {"rounds": r.rounds, "temperature": r.temperature}});
        }
        v
    }

    /// Checks what a spec needs besides its syntax: `prompt:cwe` has vectors to route with.
    fn check(&self, text: &str) -> Result<()> {
        if matches!(self.prompt, Some(PromptSpec::Cwe { vectors: None })) && self.steer.is_none() {
            bail!("method `{text}`: prompt:cwe needs steering vectors to route the prompt with: prompt:cwe:DIR, or a steer:DIR:auto part");
        }
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
}

impl SteerSpec {
    /// The vectors as `--steer` names them: `PATH`, `PATH:cwe-XXX` or `PATH:auto`.
    pub fn arg(&self) -> String {
        match &self.select {
            Selector::File => self.vectors.display().to_string(),
            Selector::Auto => format!("{}:auto", self.vectors.display()),
            Selector::Cwe(c) => format!("{}:{}", self.vectors.display(), c.slug()),
        }
    }

    /// From a `--steer` value (`PATH`, `PATH:CWE`, `PATH:auto`) and an alpha.
    pub fn from_arg(arg: &str, alpha: f64) -> Result<SteerSpec> {
        let (vectors, select) = crate::steer::parse_steer_arg(arg)?;
        if vectors.as_os_str().is_empty() {
            bail!("steer `{arg}`: no vector file or folder named");
        }
        Ok(SteerSpec { vectors, select, alpha, layer: None })
    }
}

/// Splits the options off the end of a part's body: `@NUMBER` and `:WORD` where `is_option`
/// accepts WORD, in any order. Returns what is left (the path), the number and the options (in
/// the order written).
fn split_options<'a>(body: &'a str, is_option: &dyn Fn(&str) -> bool) -> Result<(&'a str, Option<f64>, Vec<&'a str>)> {
    let (mut rest, mut number, mut opts) = (body, None, Vec::new());
    loop {
        if let Some((head, n)) = rest.rsplit_once('@') {
            if !n.contains(':') && !n.contains('/') {
                let v: f64 = n.parse().map_err(|_| anyhow!("`{n}` after `@` is not a number"))?;
                if !v.is_finite() {
                    bail!("`{n}` after `@` is not a finite number");
                }
                if number.replace(v).is_some() {
                    bail!("two `@` numbers");
                }
                rest = head;
                continue;
            }
        }
        match rest.rsplit_once(':') {
            Some((head, o)) if is_option(o) => {
                opts.insert(0, o);
                rest = head;
            }
            _ => break,
        }
    }
    Ok((rest, number, opts))
}

fn parse_part(spec: &mut MethodSpec, part: &str) -> Result<()> {
    let (kind, body) = part.split_once(':').unwrap_or((part, ""));
    match kind {
        "base" if body.is_empty() => Ok(()),
        "guard" => {
            let (dir, strength, opts) = split_options(body, &|o| matches!(o, "paper" | "reference" | "ref" | "no-prior"))?;
            if dir.is_empty() {
                bail!("guard: name the guard folder (guard:DIR)");
            }
            let mut g = GuardSpec { dir: PathBuf::from(dir), strength: strength.map_or(1.0, |s| s as f32), rule: BiasRule::Paper, prior: true };
            for o in opts {
                match o {
                    "no-prior" => g.prior = false,
                    "paper" => g.rule = BiasRule::Paper,
                    _ => g.rule = BiasRule::Reference,
                }
            }
            if spec.guard.replace(g).is_some() {
                bail!("two guard parts");
            }
            Ok(())
        }
        "steer" => {
            let is_opt = |o: &str| o == "auto" || o.starts_with("layer=") || Cwe::parse(o).is_ok();
            let (path, alpha, opts) = split_options(body, &is_opt)?;
            if path.is_empty() {
                bail!("steer: name the vectors (steer:FILE.gguf, steer:DIR:CWE or steer:DIR:auto)");
            }
            let mut s = SteerSpec { vectors: PathBuf::from(path), select: Selector::File, alpha: alpha.unwrap_or(DEFAULT_ALPHA), layer: None };
            for o in opts {
                if let Some(l) = o.strip_prefix("layer=") {
                    let l: usize = l.parse().map_err(|_| anyhow!("steer: layer=`{l}` is not a block number"))?;
                    if l == 0 {
                        bail!("steer: layer=0: steering adds after a block >= 1");
                    }
                    s.layer = Some(l);
                } else if s.select != Selector::File {
                    bail!("steer: two vector selections (`{o}` and another)");
                } else if o == "auto" {
                    s.select = Selector::Auto;
                } else {
                    s.select = Selector::Cwe(Cwe::parse(o)?);
                }
            }
            if spec.steer.replace(s).is_some() {
                bail!("two steer parts");
            }
            Ok(())
        }
        "prompt" => {
            let p = match body.split_once(':') {
                None if body == "secure" => PromptSpec::Secure,
                None if body == "cwe" => PromptSpec::Cwe { vectors: None },
                Some(("cwe", dir)) if !dir.is_empty() => PromptSpec::Cwe { vectors: Some(PathBuf::from(dir)) },
                _ => bail!("prompt:{body}: expected prompt:secure, prompt:cwe or prompt:cwe:DIR"),
            };
            if spec.prompt.replace(p).is_some() {
                bail!("two prompt parts");
            }
            Ok(())
        }
        "rerank" => {
            let (k, temperature, opts) = count_and_options(body, 2, || anyhow!("rerank:{body}: expected a number of candidates >= 2 (rerank:K)"))?;
            let mut r = RerankSpec { k, by: Scorer::Static, temperature };
            for o in opts {
                r.by = Scorer::parse(o)?;
            }
            if spec.rerank.replace(r).is_some() {
                bail!("two rerank parts");
            }
            Ok(())
        }
        "repair" => {
            let (rounds, temperature, opts) = count_and_options(body, 1, || anyhow!("repair:{body}: expected a number of rounds >= 1 (repair:R)"))?;
            if let Some(o) = opts.first() {
                bail!("repair:{body}: unknown option `{o}` (repair:R[:t=T])");
            }
            let r = RepairSpec { rounds, temperature };
            if spec.repair.replace(r).is_some() {
                bail!("two repair parts");
            }
            Ok(())
        }
        _ => bail!("`{part}` is not base, guard:..., steer:..., prompt:..., rerank:... or repair:..."),
    }
}

/// A loop part's body `N[:OPTION]...`: the count (at least `min`, else `bad()`), the temperature
/// of a `t=T` option, and the other options in order.
fn count_and_options<'a>(body: &'a str, min: usize, bad: impl Fn() -> anyhow::Error) -> Result<(usize, Option<f64>, Vec<&'a str>)> {
    let mut it = body.split(':');
    let n: usize = it.next().unwrap_or_default().parse().ok().filter(|&n| n >= min).ok_or_else(&bad)?;
    let (mut temperature, mut opts) = (None, Vec::new());
    for o in it {
        match o.strip_prefix("t=") {
            Some(t) => temperature = Some(parse_temperature(t)?),
            None => opts.push(o),
        }
    }
    Ok((n, temperature, opts))
}

/// A sampling temperature written `t=T` (0 is greedy).
fn parse_temperature(t: &str) -> Result<f64> {
    t.parse::<f64>().ok().filter(|t| t.is_finite() && (0.0..=5.0).contains(t)).ok_or_else(|| anyhow!("t=`{t}` is not a temperature between 0 and 5"))
}

impl FromStr for MethodSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let mut spec = MethodSpec::default();
        if text.trim().is_empty() {
            bail!("empty method (try `base`, or see --help for the method forms)");
        }
        for part in text.split('+') {
            parse_part(&mut spec, part.trim()).map_err(|e| anyhow!("method `{text}`: {e:#}"))?;
        }
        spec.check(text)?;
        Ok(spec)
    }
}

impl fmt::Display for PromptSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptSpec::Secure => write!(f, "prompt:secure"),
            PromptSpec::Cwe { vectors: None } => write!(f, "prompt:cwe"),
            PromptSpec::Cwe { vectors: Some(v) } => write!(f, "prompt:cwe:{}", v.display()),
        }
    }
}

impl fmt::Display for MethodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(g) = &self.guard {
            let mut p = format!("guard:{}", g.dir.display());
            if g.rule == BiasRule::Reference {
                p.push_str(":reference");
            }
            if !g.prior {
                p.push_str(":no-prior");
            }
            if g.strength != 1.0 {
                p.push_str(&format!("@{}", g.strength));
            }
            parts.push(p);
        }
        if let Some(s) = &self.steer {
            let mut p = format!("steer:{}", s.arg());
            if let Some(l) = s.layer {
                p.push_str(&format!(":layer={l}"));
            }
            if s.alpha != DEFAULT_ALPHA {
                p.push_str(&format!("@{}", s.alpha));
            }
            parts.push(p);
        }
        if let Some(p) = &self.prompt {
            parts.push(p.to_string());
        }
        if let Some(r) = &self.rerank {
            let mut p = if r.by == Scorer::Static { format!("rerank:{}", r.k) } else { format!("rerank:{}:{}", r.k, r.by.name()) };
            if let Some(t) = r.temperature {
                p.push_str(&format!(":t={t}"));
            }
            parts.push(p);
        }
        if let Some(r) = &self.repair {
            parts.push(match r.temperature {
                Some(t) => format!("repair:{}:t={t}", r.rounds),
                None => format!("repair:{}", r.rounds),
            });
        }
        if parts.is_empty() {
            write!(f, "base")
        } else {
            write!(f, "{}", parts.join("+"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> MethodSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    #[test]
    fn every_example_round_trips_and_prints_as_written() {
        for ex in EXAMPLES {
            let spec = parse(ex);
            assert_eq!(spec.to_string(), *ex, "the examples are written in the canonical form");
            assert_eq!(parse(&spec.to_string()), spec);
        }
    }

    #[test]
    fn options_in_any_order_and_defaults_print_canonically() {
        let a = parse("guard:g@0.5:reference+steer:v:auto@2:layer=12+rerank:4:static");
        let b = parse("steer:v:layer=12:auto+guard:g:ref@0.5+rerank:4");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "guard:g:reference@0.5+steer:v:auto:layer=12+rerank:4");
        let g = a.guard.as_ref().unwrap();
        assert_eq!((g.strength, g.rule, g.prior), (0.5, BiasRule::Reference, true));
        let s = a.steer.as_ref().unwrap();
        assert_eq!((s.select.clone(), s.alpha, s.layer), (Selector::Auto, 2.0, Some(12)));
        assert_eq!(parse("guard:g@1").to_string(), "guard:g");
        assert_eq!(parse("base").to_string(), "base");
        assert!(parse("base").is_base());
        assert_eq!(parse("steer:v:CWE-89@3").steer.unwrap().select, Selector::Cwe(Cwe(89)));
    }

    #[test]
    fn run_folder_names_are_the_earlier_releases_names() {
        // The names `deepguard eval` and `compare` gave these methods before the spec existed.
        for (spec, name) in [
            ("base", "base"),
            ("guard:runs/g", "guard-g-s1"),
            ("guard:runs/g:reference@0.5", "guard-g-ref-s0.5"),
            ("steer:runs/l8:auto", "steer-l8-auto-a2"),
            ("steer:runs/l16:auto", "steer-l16-auto-a2"),
            ("steer:runs/l16/all.gguf", "steer-all-a2"),
            ("guard:runs/g+steer:v:cwe-089@1.5", "guard-g-s1+steer-v-cwe-089-a1.5"),
            ("rerank:4", "base-rerank4"),
            ("guard:runs/g+rerank:4:both", "guard-g-s1-rerank4-both"),
        ] {
            assert_eq!(parse(spec).name(), name, "{spec}");
        }
        // New knobs get new names, so they never share a folder with the default.
        assert_eq!(parse("guard:g:no-prior").name(), "guard-g-noprior-s1");
        assert_eq!(parse("steer:v:auto:layer=12").name(), "steer-v-auto-l12-a2");
        assert_eq!(parse("prompt:secure").name(), "prompt-secure");
        assert_eq!(parse("guard:g+prompt:secure+rerank:2").name(), "guard-g-s1+prompt-secure-rerank2");
        assert_eq!(parse("steer:v:auto+prompt:cwe").name(), "steer-v-auto-a2+prompt-cwe");
        assert_eq!(parse("rerank:4:t=0.8").name(), "base-rerank4-t0.8");
        assert_eq!(parse("prompt:secure+rerank:4:both:t=1+repair:2:t=0.6").name(), "prompt-secure-rerank4-both-t1-repair2-t0.6");
        assert_eq!(parse("repair:2").name(), "base-repair2");
    }

    #[test]
    fn rerank_options_in_any_order_and_repair_settings() {
        let a = parse("rerank:4:t=0.8:both");
        assert_eq!(a.rerank, Some(RerankSpec { k: 4, by: Scorer::Both, temperature: Some(0.8) }));
        assert_eq!(a.to_string(), "rerank:4:both:t=0.8");
        let r = parse("guard:g+repair:3:t=0.5");
        assert_eq!(r.repair, Some(RepairSpec { rounds: 3, temperature: Some(0.5) }));
        assert_eq!(r.without_rerank(), parse("guard:g"), "the generating method has neither loop");
        assert_eq!(parse("rerank:2+repair:1").without_repair(), parse("rerank:2"));
        // A repair wraps whatever it repairs, rerank included, in config.json.
        let s = parse("rerank:2:t=0.9+repair:1").settings();
        assert_eq!(s["repair"]["rounds"], 1);
        assert_eq!(s["method"]["rerank"]["temperature"], 0.9);
        assert_eq!(s["method"]["method"]["method"], "base");
    }

    #[test]
    fn settings_are_the_earlier_releases_json_for_their_methods() {
        assert_eq!(parse("base").settings(), serde_json::json!({"method": "base"}));
        assert_eq!(
            parse("guard:runs/g+steer:v:auto@4").settings(),
            serde_json::json!({"method": "guard-g-s1+steer-v-auto-a4", "steer": {"vectors": "v:auto", "alpha": 4.0}, "guard": {"dir": "runs/g", "bias_rule": "paper", "strength": 1.0}})
        );
        assert_eq!(parse("rerank:3:analyzer").settings(), serde_json::json!({"method": {"method": "base"}, "rerank": {"candidates": 3, "by": "analyzer"}}));
        let p = parse("prompt:secure").settings();
        assert_eq!((p["method"].as_str(), p["prompt"].as_str()), (Some("prompt-secure"), Some("prompt:secure")));
        assert_eq!(parse("guard:g:no-prior").settings()["guard"]["prior"], false);
    }

    #[test]
    fn bad_specs_are_one_error_naming_the_spec_and_the_part() {
        for (spec, says) in [
            ("", "empty method"),
            ("guard", "name the guard folder"),
            ("guard:g@strong", "`strong` after `@` is not a number"),
            ("guard:g@inf", "not a finite number"),
            ("steer:v:auto:cwe-089", "two vector selections"),
            ("steer:v:layer=0", "layer=0"),
            ("steer:v:layer=x", "not a block number"),
            ("rerank:1", "candidates >= 2"),
            ("rerank:4:best", "unknown rerank scorer `best`"),
            ("rerank:4:t=hot", "not a temperature"),
            ("rerank:4:t=-1", "not a temperature"),
            ("repair:0", "rounds >= 1"),
            ("repair:2:both", "unknown option `both`"),
            ("repair:1+repair:2", "two repair parts"),
            ("prompt:polite", "prompt:secure, prompt:cwe"),
            ("prompt:cwe", "needs steering vectors"),
            ("guard:a+guard:b", "two guard parts"),
            ("lora:x", "is not base, guard"),
            ("base:x", "is not base, guard"),
        ] {
            let e = format!("{:#}", spec.parse::<MethodSpec>().unwrap_err());
            assert!(e.contains(says), "{spec:?}: {e}");
            if !spec.is_empty() {
                assert!(e.contains(&format!("method `{spec}`")), "{spec:?}: {e}");
            }
        }
    }
}
