//! `scan`: the analyzer's score for every token of a source file, rendered for a terminal (ANSI
//! colours) or as an HTML page. Low scores mark code the analyzer reads as vulnerable.

use crate::guard::Guard;
use anyhow::{anyhow, bail, Result};
use deepguard_runtime::Model;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct TokenScore {
    /// Byte span in the source.
    pub start: usize,
    pub end: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanResult {
    pub file: String,
    /// Mean token score (the sequence score).
    pub score: f32,
    pub tokens: Vec<TokenScore>,
    /// Tokens scored (the file may have been cut to `max_tokens`).
    pub scored_tokens: usize,
    pub total_tokens: usize,
}

/// Scores `text` (at most `max_tokens` tokens, and never beyond the model's context).
pub fn scan(guard: &Guard, model: &Model, file: &str, text: &str, max_tokens: usize) -> Result<ScanResult> {
    let enc = model.tokenizer.inner().encode(text, false).map_err(|e| anyhow!("{file}: tokenizer: {e}"))?;
    let total = enc.get_ids().len();
    if total == 0 {
        bail!("{file}: nothing to scan (no tokens)");
    }
    let keep = total.min(max_tokens).min(model.cfg().context_length);
    let ids = &enc.get_ids()[..keep];
    let (scores, _) = guard.score(model, ids)?;
    let tokens: Vec<TokenScore> = enc.get_offsets()[..keep].iter().zip(&scores).map(|(&(s, e), &score)| TokenScore { start: s, end: e, score }).collect();
    let score = scores.iter().sum::<f32>() / scores.len() as f32;
    Ok(ScanResult { file: file.to_string(), score, tokens, scored_tokens: keep, total_tokens: total })
}

/// Pieces of `text` with the score of the token covering them (None between tokens).
fn pieces<'t>(r: &ScanResult, text: &'t str) -> Vec<(&'t str, Option<f32>)> {
    let mut out = Vec::new();
    let mut at = 0;
    for t in &r.tokens {
        let (s, e) = (t.start.max(at).min(text.len()), t.end.min(text.len()));
        if s > at {
            out.push((&text[at..s], None));
        }
        if e > s && text.is_char_boundary(s) && text.is_char_boundary(e) {
            out.push((&text[s..e], Some(t.score)));
            at = e;
        } else {
            at = at.max(s);
        }
    }
    if at < text.len() {
        out.push((&text[at..], None));
    }
    out
}

/// Terminal rendering: tokens scored below `threshold` in red (bold below threshold / 2),
/// the rest plain; the sequence score on the last line.
pub fn render_ansi(r: &ScanResult, text: &str, threshold: f32, color: bool) -> String {
    let mut s = String::new();
    for (piece, score) in pieces(r, text) {
        match score {
            Some(x) if color && x < threshold / 2.0 => {
                let _ = write!(s, "\x1b[1;97;41m{piece}\x1b[0m");
            }
            Some(x) if color && x < threshold => {
                let _ = write!(s, "\x1b[31m{piece}\x1b[0m");
            }
            _ => s.push_str(piece),
        }
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Lines holding at least one token below `threshold`: (1-based line, lowest score).
pub fn risky_lines(r: &ScanResult, text: &str, threshold: f32) -> Vec<(usize, f32)> {
    let mut best: std::collections::BTreeMap<usize, f32> = Default::default();
    for t in r.tokens.iter().filter(|t| t.score < threshold) {
        let line = text[..t.start.min(text.len())].matches('\n').count() + 1;
        let e = best.entry(line).or_insert(1.0);
        *e = e.min(t.score);
    }
    best.into_iter().collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A self-contained HTML page: every token shaded from red (score 0) to white (score 1), its
/// score in a tooltip.
pub fn render_html(r: &ScanResult, text: &str, threshold: f32) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>deepguard scan: {f}</title><style>body{{font-family:sans-serif;margin:2em}}pre{{font-size:13px;line-height:1.45;background:#fafafa;padding:1em;border:1px solid #ddd}}span.t{{border-radius:2px}}</style></head><body><h1>{f}</h1><p>Sequence score <b>{sc:.3}</b> (mean token score; higher reads as more secure). {n} of {tot} tokens scored. Tokens below {th} are shaded red, darker for lower scores.</p><pre>",
        f = esc(&r.file),
        sc = r.score,
        n = r.scored_tokens,
        tot = r.total_tokens,
        th = threshold
    );
    for (piece, score) in pieces(r, text) {
        match score {
            Some(x) if x < threshold => {
                let a = ((threshold - x) / threshold).clamp(0.0, 1.0) * 0.85 + 0.1;
                let _ = write!(s, "<span class=\"t\" title=\"{x:.3}\" style=\"background:rgba(220,30,30,{a:.2})\">{}</span>", esc(piece));
            }
            Some(x) => {
                let _ = write!(s, "<span class=\"t\" title=\"{x:.3}\">{}</span>", esc(piece));
            }
            None => s.push_str(&esc(piece)),
        }
    }
    s.push_str("</pre></body></html>\n");
    s
}
