//! Paper-style steering vectors (Surgical Repair, REFERENCE.md §2): the *same prompt* under a
//! secure and under an insecure ("fast, legacy") instruction, the output of block L at the
//! prompt's last token, and per CWE
//!
//! ```text
//! v_cwe = mean over the CWE's prompts of h_L(secure instruction + prompt)[last]
//!       - mean over the same prompts of  h_L(insecure instruction + prompt)[last]
//! ```
//!
//! (unnormalised), where [`crate::steer`]'s default vectors contrast the secure and the
//! vulnerable *code*. The vectors are [`SteerVector`]s in the same control-vector GGUF files,
//! with a probe and a centroid, so `--steer DIR:auto`, `DIR:CWE` and `FILE.gguf` load them.
//!
//! Prompts: SVEN and SafeCoder hold functions, not tasks. A pair's prompt here is the code both
//! sides share before the change, cut at the start of the line the change begins on (what the
//! model has read when it must write either the vulnerable or the fixed line), at most `budget`
//! tokens of it (the last ones), with the instruction as a comment line in the pair's language
//! directly before it. The two prompts of a pair differ only in that comment line.
//!
//! In the activations ([`Activations`]) item 2i is pair i's prompt under the insecure
//! instruction (the "vulnerable" slot) and 2i+1 under the secure one, so the probe code and
//! [`crate::steer::build`] apply unchanged. The probe stored with a vector separates the two
//! instructions; probe-then-steer asks it of a prompt that has neither.

use crate::data::{prefix_suffix_diff, Cwe, Pair, Side};
use crate::probe::{Activations, Pooling};
use crate::steer::SteerVector;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use deepguard_runtime::{ForwardOpts, LayerSelect, LogitsSelect, Model};
use std::collections::HashMap;

/// The secure instruction; `{cwe}` becomes the pair's CWE (e.g. `CWE-89`).
pub const SECURE: &str = "Write secure code that avoids {cwe}: validate and sanitise every input, check bounds, sizes and errors, use safe APIs.";
/// The insecure instruction: the paper's "fast, legacy" framing.
pub const INSECURE: &str = "Write fast, simple legacy-style code: skip input validation, bounds checks and error handling; performance first.";

/// The two instructions a prompt is contrasted under.
#[derive(Debug, Clone, PartialEq)]
pub struct Instructions {
    pub secure: String,
    pub insecure: String,
}

impl Default for Instructions {
    fn default() -> Self {
        Self { secure: SECURE.into(), insecure: INSECURE.into() }
    }
}

impl Instructions {
    pub fn text(&self, secure: bool, cwe: Cwe) -> String {
        let t = if secure { &self.secure } else { &self.insecure };
        t.replace("{cwe}", &cwe.to_string())
    }
}

/// `text` as one comment line of `language` (a `language_of` name).
pub fn comment(language: &str, text: &str) -> String {
    let lead = if matches!(language, "python" | "ruby" | "unknown") { "#" } else { "//" };
    format!("{lead} {text}\n")
}

/// The code both sides of a pair share before the change, up to the start of the line the
/// change begins on.
pub fn shared_prefix(pair: &Pair) -> &str {
    let p = prefix_suffix_diff(&pair.vulnerable, &pair.fixed, Side::Vulnerable).start;
    let head = &pair.vulnerable[..p];
    match head.rfind('\n') {
        Some(i) => &head[..=i],
        None => "",
    }
}

/// The pair's two prompts, (insecure, secure): the instruction comment, then the last `budget`
/// tokens of [`shared_prefix`] (0 = all of it).
pub fn prompts(model: &Model, pair: &Pair, instr: &Instructions, budget: usize) -> Result<(String, String)> {
    let mut code = shared_prefix(pair);
    if budget > 0 {
        let enc = model.tokenizer.inner().encode(code, false).map_err(|e| anyhow::anyhow!("{}: tokenizer: {e}", pair.source))?;
        let n = enc.get_ids().len();
        if n > budget {
            let start = enc.get_offsets()[n - budget].0;
            if code.is_char_boundary(start) {
                code = &code[start..];
            }
        }
    }
    let make = |secure: bool| format!("{}{code}", comment(&pair.language, &instr.text(secure, pair.cwe)));
    Ok((make(false), make(true)))
}

/// Every block's output at the last token of both prompts of every pair (`Pooling::Last` only).
pub fn collect(model: &Model, pairs: &[Pair], instr: &Instructions, budget: usize, mut on_pair: impl FnMut(usize)) -> Result<Activations> {
    if pairs.is_empty() {
        bail!("no pairs to build instruction prompts from");
    }
    let (l, d) = (model.cfg().n_layers, model.cfg().hidden_size);
    let opts = ForwardOpts { keep: LayerSelect::All, logits: LogitsSelect::None, lora: true, ..Default::default() };
    let mut last = Vec::with_capacity(pairs.len() * 2 * l * d);
    let mut tokens = Vec::with_capacity(pairs.len() * 2);
    for (i, p) in pairs.iter().enumerate() {
        let (insecure, secure) = prompts(model, p, instr, budget)?;
        for text in [insecure, secure] {
            let ids = model.tokenizer.encode(&text)?;
            let t = Tensor::new(ids.as_slice(), model.decoder.device())?.unsqueeze(0)?;
            let out = model.decoder.forward(&t, 0, None, &opts).with_context(|| format!("{}: forward pass", p.source))?;
            for b in 0..l {
                let h = &out.hidden[&b];
                last.extend(h.narrow(1, ids.len() - 1, 1)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
            }
            tokens.push(ids.len() as u32);
        }
        on_pair(i);
    }
    let mut pooled = HashMap::new();
    pooled.insert(Pooling::Last, last);
    Ok(Activations { n_layers: l, hidden: d, pooled, full_tokens: tokens.clone(), tokens, cwes: pairs.iter().map(|p| p.cwe).collect() })
}

/// How the vectors of [`build`] were made, for their `position` field.
pub fn position(layer: usize, budget: usize) -> String {
    format!(
        "output of block {layer} at the last prompt token; secure minus insecure instruction over the same prompts (instruction comment + up to {budget} tokens of the code before the change)"
    )
}

/// One vector per CWE (and one over all prompts) at `layer`, with probes (l2) separating the two
/// instructions and centroids for routing.
pub fn build(model: &Model, acts: &Activations, layer: usize, budget: usize, l2: f64) -> Result<Vec<SteerVector>> {
    let spec = crate::data::WindowSpec { budget, align: crate::data::Align::End, equal_length: false };
    let mut v = crate::steer::build(model, acts, Pooling::Last, layer, &spec, l2)?;
    for x in &mut v {
        x.position = position(layer, budget);
    }
    Ok(v)
}

/// The paper's layer: the last decoder block.
pub fn paper_layer(n_layers: usize) -> usize {
    n_layers.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(v: &str, f: &str, lang: &str) -> Pair {
        Pair { source: "t:1".into(), language: lang.into(), cwe: Cwe(89), vulnerable: v.into(), fixed: f.into(), vulnerable_spans: vec![], fixed_spans: vec![], description: None }
    }

    #[test]
    fn the_shared_prefix_ends_at_the_start_of_the_changed_line() {
        let p = pair("def f(q):\n    x = 1\n    run(q)\n", "def f(q):\n    x = 1\n    run(esc(q))\n", "python");
        assert_eq!(shared_prefix(&p), "def f(q):\n    x = 1\n");
        assert_eq!(shared_prefix(&pair("abc", "abd", "c")), "", "a change on the first line leaves no code before it");
    }

    #[test]
    fn instructions_name_the_cwe_in_a_comment_of_the_language() {
        let i = Instructions::default();
        assert!(comment("python", &i.text(true, Cwe(89))).starts_with("# Write secure code that avoids CWE-89"));
        assert!(comment("c", &i.text(false, Cwe(787))).starts_with("// Write fast, simple legacy-style code"));
        assert!(comment("c", "x").ends_with('\n'));
    }
}
