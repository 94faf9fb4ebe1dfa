//! A [`MethodSpec`] as one [`Method`]: steering vectors (Surgical Repair), DeepGuard (adapters +
//! prompt-conditioned logit bias), a prompt variant, or any of them at once. `generate`, `eval`,
//! `compare` and the server share it (a rerank wraps it in `deepguard_eval::rerank`).

use crate::guard::Guard;
use crate::spec::{MethodSpec, PromptSpec};
use crate::steer;
use anyhow::{anyhow, Result};
use deepguard_runtime::chat::Message;
use deepguard_runtime::generate::{DiagnosticPrompt, Diagnosis, Guidance, Method, Prompt};
use deepguard_runtime::Model;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};

/// The fixed reminder of `prompt:secure`.
pub const SECURE_REMINDER: &str = "Write secure code: validate all inputs and avoid injection, path traversal, unsafe deserialization, memory errors and weak cryptography.";

/// The reminder of `prompt:cwe` for a weakness.
pub fn cwe_reminder(cwe: crate::data::Cwe) -> String {
    match cwe.title() {
        Some(t) => format!("Write secure code: this code is at risk of {cwe} ({t}); avoid it."),
        None => format!("Write secure code: this code is at risk of {cwe}; avoid it."),
    }
}

/// The line-comment marker of a free-text code prompt (a benchmark scenario knows its
/// language): `//` for C-like code, `#` otherwise.
pub fn guess_comment(text: &str) -> &'static str {
    let c_like = ["#include", "int main", "};", "//", "/*", "printf("];
    if c_like.iter().any(|m| text.contains(m)) {
        "//"
    } else {
        "#"
    }
}

/// `prompt` with `line` added: a comment line at the top of code (after a `#!` line), or a
/// system line in chat (appended to the system message, or a new one first).
pub fn remind(prompt: Prompt, line: &str) -> Prompt {
    match prompt {
        Prompt::Code { text, comment } => {
            let at = if text.starts_with("#!") { text.find('\n').map_or(text.len(), |i| i + 1) } else { 0 };
            let sep = if at == text.len() && !text.is_empty() && !text.ends_with('\n') { "\n" } else { "" };
            let text = format!("{}{sep}{comment} {line}\n{}", &text[..at], &text[at..]);
            Prompt::Code { text, comment }
        }
        Prompt::Chat(mut msgs) => {
            match msgs.first_mut() {
                Some(m) if m.role == "system" => {
                    if !m.content.is_empty() && !m.content.ends_with('\n') {
                        m.content.push('\n');
                    }
                    m.content.push_str(line);
                }
                _ => msgs.insert(0, Message::new("system", line)),
            }
            Prompt::Chat(msgs)
        }
    }
}

/// What a method applied to one prompt: the guidance, and a JSON report (the server sends it
/// back in a response's `deepguard` field).
pub struct Applied {
    pub guidance: Guidance<'static>,
    pub report: Value,
}

pub struct Guided {
    /// The method (its rerank part, if any, is not applied here).
    pub spec: MethodSpec,
    /// Print what is applied to each prompt on stderr.
    pub verbose: bool,
    guard: OnceLock<Arc<Guard>>,
}

impl Guided {
    pub fn new(spec: MethodSpec, verbose: bool) -> Self {
        Self { spec: spec.without_rerank(), verbose, guard: OnceLock::new() }
    }

    /// With the spec's guard already loaded and attached to the model (the server loads it once
    /// for every request).
    pub fn with_guard(spec: MethodSpec, guard: Arc<Guard>) -> Self {
        let g = Self::new(spec, false);
        let _ = g.guard.set(guard);
        g
    }

    /// The guard's analyzer: the sequence score of `code` (a candidate's code), with the
    /// adapters attached as in training. None without a guard.
    pub fn code_score(&self, model: &Model, code: &str) -> Result<Option<f32>> {
        let Some(guard) = self.guard.get() else { return Ok(None) };
        let ids = model.tokenizer.encode(code)?;
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(guard.score(model, &ids)?.1))
    }

    /// The prompt rewritten by the spec's prompt variant, and what was done.
    pub fn rewrite(&self, model: &Model, prompt: Prompt) -> Result<(Prompt, Value)> {
        match &self.spec.prompt {
            None => Ok((prompt, Value::Null)),
            Some(PromptSpec::Secure) => Ok((remind(prompt, SECURE_REMINDER), json!({"variant": "secure"}))),
            Some(PromptSpec::Cwe { .. }) => {
                let dir = self.spec.routing_vectors().ok_or_else(|| anyhow!("prompt:cwe: no steering vectors to route with"))?;
                let text = match &prompt {
                    Prompt::Code { text, .. } => text.clone(),
                    Prompt::Chat(msgs) => msgs.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()).unwrap_or_default(),
                };
                let ids = model.tokenizer.encode(&text)?;
                let cwe = if ids.is_empty() { None } else { steer::route_cwe(model, &dir, &ids)? };
                Ok(match cwe {
                    Some(c) => (remind(prompt, &cwe_reminder(c)), json!({"variant": "cwe", "cwe": c.to_string()})),
                    None => (prompt, json!({"variant": "cwe", "cwe": null, "note": "no vector with a probe routed the prompt: left as it is"})),
                })
            }
        }
    }

    /// Steering hooks and the guard's logit bias for one (already rewritten) prompt.
    pub fn apply(&self, model: &Model, prompt_ids: &[u32]) -> Result<Applied> {
        let mut g: Guidance<'static> = Guidance::default();
        let mut report = json!({"method": self.spec.name(), "guard": null, "steer": null});
        if let Some(s) = &self.spec.steer {
            let (hooks, note) = steer::hooks_for(model, s, prompt_ids)?;
            if self.verbose {
                eprintln!("{note}");
            }
            let selector = match &s.select {
                steer::Selector::File => "file".to_string(),
                steer::Selector::Auto => "auto".to_string(),
                steer::Selector::Cwe(c) => c.slug(),
            };
            report["steer"] = json!({"selector": selector, "alpha": s.alpha, "applied": !hooks.is_empty(), "note": note});
            for h in hooks {
                g.hooks.push(Box::new(h));
            }
        }
        if let Some(spec) = &self.spec.guard {
            let (rule, strength) = (spec.rule, spec.strength);
            let mut r = json!({"strength": strength, "bias_rule": format!("{rule:?}").to_lowercase(), "prior": spec.prior});
            if spec.prior {
                let guard = self.guard.get().ok_or_else(|| anyhow!("guard not prepared (call prepare first)"))?;
                let t = std::time::Instant::now();
                let (bias, s) = guard.guidance(model, prompt_ids, rule, strength)?;
                if self.verbose {
                    eprintln!("guard: prompt score {s:.4} ({:.2}s), {rule:?} bias, strength {strength}", t.elapsed().as_secs_f64());
                }
                r["prompt_score"] = json!(s);
                g.processors.push(Box::new(bias));
            } else if self.verbose {
                eprintln!("guard: adapters only (no-prior: no logit bias)");
            }
            report["guard"] = r;
        }
        Ok(Applied { guidance: g, report })
    }
}

impl Method for Guided {
    fn name(&self) -> String {
        self.spec.name()
    }

    fn settings(&self) -> Value {
        self.spec.settings()
    }

    fn prepare(&self, model: &mut Model) -> Result<()> {
        if let (Some(g), None) = (&self.spec.guard, self.guard.get()) {
            let guard = Guard::load(&g.dir, model)?;
            guard.attach(model)?;
            let _ = self.guard.set(Arc::new(guard));
        }
        Ok(())
    }

    fn prompt(&self, model: &Model, prompt: Prompt) -> Result<Prompt> {
        let (p, what) = self.rewrite(model, prompt)?;
        if self.verbose && !what.is_null() {
            eprintln!("prompt: {what}");
        }
        Ok(p)
    }

    fn diagnose(&self, model: &Model, prompts: &[DiagnosticPrompt]) -> Result<Option<Diagnosis>> {
        let guard = match &self.spec.guard {
            Some(_) => Some(self.guard.get().ok_or_else(|| anyhow!("guard not prepared (call prepare first)"))?.as_ref()),
            None => None,
        };
        let steer = self.spec.steer.as_ref().map(|s| (s.vectors.as_path(), &s.select));
        crate::diagnostics::guided(model, guard, steer, prompts)
    }
    fn guidance<'a>(&'a self, model: &Model, prompt_ids: &[u32]) -> Result<Guidance<'a>> {
        Ok(self.apply(model, prompt_ids)?.guidance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str, comment: &str) -> Prompt {
        Prompt::Code { text: text.into(), comment: comment.into() }
    }

    #[test]
    fn the_reminder_is_a_comment_in_the_prompts_own_syntax_at_the_top() {
        let py = remind(code("import os\n\ndef f(x):\n", "#"), SECURE_REMINDER);
        assert_eq!(py, code(&format!("# {SECURE_REMINDER}\nimport os\n\ndef f(x):\n"), "#"));
        let c = remind(code("#include <stdio.h>\nint main() {\n", "//"), "Write secure code.");
        assert_eq!(c, code("// Write secure code.\n#include <stdio.h>\nint main() {\n", "//"));
        // A script's `#!` line stays first.
        let sh = remind(code("#!/usr/bin/env python3\nimport os\n", "#"), "R.");
        assert_eq!(sh, code("#!/usr/bin/env python3\n# R.\nimport os\n", "#"));
    }

    #[test]
    fn a_free_text_prompt_gets_the_comment_marker_of_its_language() {
        assert_eq!(guess_comment("#include <stdio.h>\nint f(char *s) {\n"), "//");
        assert_eq!(guess_comment("import os\n# read the file\ndef f(path):\n"), "#");
    }

    #[test]
    fn in_chat_the_reminder_is_a_system_line() {
        let user = Message::new("user", "Write a login handler.");
        assert_eq!(remind(Prompt::Chat(vec![user.clone()]), "R."), Prompt::Chat(vec![Message::new("system", "R."), user.clone()]));
        let sys = Message::new("system", "You are terse.");
        assert_eq!(remind(Prompt::Chat(vec![sys, user.clone()]), "R."), Prompt::Chat(vec![Message::new("system", "You are terse.\nR."), user]));
    }

    #[test]
    fn the_cwe_reminder_names_the_weakness() {
        assert_eq!(cwe_reminder(crate::data::Cwe(89)), "Write secure code: this code is at risk of CWE-89 (SQL injection); avoid it.");
        assert_eq!(cwe_reminder(crate::data::Cwe(1234)), "Write secure code: this code is at risk of CWE-1234; avoid it.");
    }
}
