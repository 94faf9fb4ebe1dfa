//! The check-repair loop per request (`repair:R`): the draft is generated, its code checked by
//! the static tools and the build check of `deepguard_eval::repair`, and a flagged version is
//! generated again with the findings and their remedies, up to R rounds; the loop keeps
//! `repair::choose`'s pick. A completion's code is its prompt and the completion; a chat's, the
//! first fenced code block of the reply. Checks run in a blocking task, never on the executor.

use crate::api::ApiError;
use crate::http::{generate_one, AppState, Generated};
use axum::http::StatusCode;
use deepguard_eval::judge::Finding;
use deepguard_eval::repair::{self, Version};
use deepguard_eval::scenario::Lang;
use deepguard_methods::spec::{MethodSpec, RepairSpec};
use deepguard_runtime::chat::{self, Message};
use deepguard_runtime::generate::SamplingParams;
use serde_json::{json, Value};
use std::time::Instant;

/// The language of a free-text prompt: C when it has an `#include`, else Python.
pub fn guess_language(text: &str) -> Lang {
    if text.contains("#include") {
        Lang::C
    } else {
        Lang::Py
    }
}

/// The name a response gives a language.
pub fn language_name(l: Lang) -> &'static str {
    match l {
        Lang::Py => "python",
        Lang::C => "c",
    }
}

/// The first fenced code block of a chat reply: its fence tag (None when bare) and its code.
/// An unclosed block runs to the end of the reply (a reply cut by `max_tokens`).
pub fn code_block(reply: &str) -> Option<(Option<String>, String)> {
    let start = reply.find("```")?;
    let rest = &reply[start + 3..];
    let (tag, body) = match rest.find('\n') {
        Some(i) => (rest[..i].trim(), &rest[i + 1..]),
        None => return None,
    };
    let code = match body.find("```") {
        Some(end) => &body[..end],
        None => body,
    };
    let tag = tag.split_whitespace().next().map(str::to_string);
    Some((tag, code.to_string()))
}

/// The user message of a chat repair round: what the review found (at most
/// [`repair::MAX_SHOWN`] findings), the remedies, and a request for the whole code again.
pub fn follow_up(lang: Lang, findings: &[Finding], remedies: &[&str]) -> String {
    let mut s = String::from("A security review of the code in your answer found these problems:\n");
    for f in findings.iter().take(repair::MAX_SHOWN) {
        let msg: String = f.message.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
        let cwe = if f.cwe.is_empty() { String::new() } else { format!(" ({})", f.cwe) };
        s += &format!("- line {}: {} {}{cwe}: {msg}\n", f.line, f.tool, f.rule);
    }
    if !remedies.is_empty() {
        s += "How to fix them:\n";
        for r in remedies {
            s += &format!("- {r}.\n");
        }
    }
    s += &format!("Write the whole code again without these problems, keeping what it does, in one ```{} code block.", language_name(lang));
    s
}

/// A finding as the response reports it.
fn finding_json(f: &Finding) -> Value {
    json!({"tool": f.tool, "rule": f.rule, "cwe": f.cwe, "line": f.line, "message": f.message})
}

/// What a repair request is about: a completion's prompt (as the model saw it) in a language,
/// or a chat's messages.
pub enum Subject {
    Completion { prompt: String, lang: Lang },
    Chat { messages: Vec<Message> },
}

/// The answer of a repaired request: the kept version's text and finish reason, the tokens of
/// every round, and the `repair` report.
pub struct Repaired {
    pub text: String,
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// The first round's method report.
    pub report: Value,
    pub repair: Value,
}

/// The seed of round `round` (round 0 is the request's own).
fn round_seed(seed: u64, round: usize) -> u64 {
    seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(round as u64)
}

/// Runs the loop for one sample. `spec` is the request's method (its repair part sets the
/// rounds); `ids` the draft's prompt tokens.
#[allow(clippy::too_many_arguments)]
pub async fn run(st: &AppState, subject: Subject, spec: &MethodSpec, r: RepairSpec, ids: Vec<u32>, params: SamplingParams, ignore_eos: bool, arrived: Instant, deadline: Instant) -> Result<Repaired, ApiError> {
    let checks = st.methods.checks().ok_or_else(|| ApiError::bad("repair needs the static tools: this server has none (start it with --venv)").param("deepguard.method"))?;
    let generate = |ids: Vec<u32>, round: usize| {
        let mut p = params.clone();
        if round > 0 {
            p.seed = round_seed(params.seed, round);
            p.temperature = r.temperature.unwrap_or(params.temperature);
        }
        // A repair round's prompt is longer: its completion gets what is left of the context.
        p.max_tokens = p.max_tokens.min(st.cfg.ctx.saturating_sub(ids.len()));
        let prepare = st.methods.prepare(spec.without_repair(), ignore_eos);
        async move {
            if p.max_tokens == 0 {
                return Ok(None);
            }
            generate_one(st, ids, p, prepare, arrived, deadline).await.map(Some)
        }
    };
    let draft = generate(ids, 0).await?.ok_or_else(|| ApiError::bad("The prompt leaves no room for the completion."))?;
    let report = draft.report.clone();
    let (mut prompt_tokens, mut completion_tokens) = (draft.prompt_tokens, draft.completion_tokens);
    let mut versions: Vec<Version> = vec![];
    let mut rounds: Vec<Value> = vec![];
    let mut texts: Vec<(String, &'static str)> = vec![];
    let mut note = Value::Null;
    let mut g: Generated = draft;
    // The version's code to check: a completion's continuation, or the reply's code block.
    let mut code = g.text.clone();
    for round in 0..=r.rounds {
        let (lang, program) = match &subject {
            Subject::Completion { prompt, lang } => (*lang, Some(format!("{prompt}{code}"))),
            Subject::Chat { .. } => match code_block(&g.text) {
                Some((tag, block)) => (tag.as_deref().and_then(Lang::parse).unwrap_or_else(|| guess_language(&block)), Some(block)),
                None => (Lang::Py, None),
            },
        };
        let complete = g.finish_reason == "stop";
        let text = match &subject {
            Subject::Completion { .. } => code.clone(),
            Subject::Chat { .. } => g.text.clone(),
        };
        let mut rec = json!({"round": round, "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens, "finish_reason": g.finish_reason});
        let Some(program) = program else {
            rec["checked"] = json!(false);
            rec["note"] = json!("the reply has no fenced code block: nothing to check");
            versions.push(Version { code: text.clone(), complete, tokens: g.completion_tokens, flags: vec![], broken: vec![] });
            texts.push((text, g.finish_reason));
            rounds.push(rec);
            break;
        };
        let sc = match &subject {
            Subject::Completion { prompt, .. } => repair::scenario_for(lang, prompt),
            Subject::Chat { .. } => repair::scenario_for(lang, ""),
        };
        let (c2, sc2, prog2) = (checks.clone(), sc.clone(), program.clone());
        let check = tokio::task::spawn_blocking(move || repair::check_one(&c2, &sc2, &prog2));
        let (flags, broken) = match tokio::time::timeout_at(deadline.into(), check).await {
            Err(_) => return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, format!("The checks of repair round {round} did not finish within the server's time limit of {}s (--request-timeout).", st.cfg.request_timeout.as_secs_f64()))),
            Ok(Err(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("The checks of repair round {round} stopped: {e}"))),
            Ok(Ok(Err(e))) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("The checks of repair round {round} failed: {e:#}"))),
            Ok(Ok(Ok(found))) => found,
        };
        rec["checked"] = json!(true);
        rec["language"] = json!(language_name(lang));
        rec["flagged"] = json!(!flags.is_empty());
        rec["findings"] = flags.iter().map(finding_json).collect();
        rec["broken"] = broken.iter().map(finding_json).collect();
        rounds.push(rec);
        versions.push(Version { code: text.clone(), complete, tokens: g.completion_tokens, flags: flags.clone(), broken: broken.clone() });
        texts.push((text, g.finish_reason));
        // As in the eval loop: a draft is repaired when flagged; a repaired version also when it
        // no longer builds.
        if (flags.is_empty() && (round == 0 || broken.is_empty())) || round == r.rounds {
            break;
        }
        let last: Vec<Finding> = flags.iter().chain(if round > 0 { &broken[..] } else { &[] }).cloned().collect();
        let remedies = repair::remedies(lang, &last);
        let (next_ids, join) = match &subject {
            Subject::Completion { .. } => {
                let (shown, join) = repair::with_feedback(&sc, &repair::feedback(lang.comment(), &program, &last), &remedies);
                (st.model.tokenizer.encode(&shown.prompt()).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?, join)
            }
            Subject::Chat { messages } => {
                let mut m = messages.clone();
                m.push(Message::new("assistant", &g.text));
                m.push(Message::new("user", &follow_up(lang, &last, &remedies)));
                (chat::encode(&st.model.tokenizer, &m).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?, "")
            }
        };
        match generate(next_ids, round + 1).await? {
            Some(next) => {
                prompt_tokens += next.prompt_tokens;
                completion_tokens += next.completion_tokens;
                code = format!("{join}{}", next.text);
                g = next;
            }
            None => {
                note = json!(format!("round {} did not run: its prompt leaves no room in the context", round + 1));
                break;
            }
        }
    }
    let kept = repair::choose(&versions);
    let (text, finish_reason) = texts.swap_remove(kept);
    let mut repair = json!({"rounds": r.rounds, "ran": rounds, "kept": kept, "checked_by": format!("{}+build", checks.judge.name())});
    if !note.is_null() {
        repair["note"] = note;
    }
    Ok(Repaired { text, finish_reason, prompt_tokens, completion_tokens, report, repair })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fenced_block_is_the_code_and_its_tag_the_language() {
        let reply = "Here it is:\n```python\nimport os\nos.system(x)\n```\nand a test:\n```c\nint x;\n```\n";
        assert_eq!(code_block(reply), Some((Some("python".into()), "import os\nos.system(x)\n".into())));
        assert_eq!(code_block("```\nint main() {}\n```"), Some((None, "int main() {}\n".into())));
        // A reply cut by max_tokens: the block runs to the end.
        assert_eq!(code_block("ok\n```c\nint f("), Some((Some("c".into()), "int f(".into())));
        assert_eq!(code_block("no code here"), None);
        assert_eq!(code_block("inline ``` only"), None);
    }

    #[test]
    fn a_prompt_with_an_include_is_c_else_python() {
        assert_eq!(guess_language("#include <stdio.h>\nint main() {\n"), Lang::C);
        assert_eq!(guess_language("import os\n# include this\ndef f():\n"), Lang::Py);
        assert_eq!(guess_language(""), Lang::Py);
        assert_eq!((Lang::parse("Python"), Lang::parse("c"), Lang::parse("rust")), (Some(Lang::Py), Some(Lang::C), None));
    }

    #[test]
    fn the_follow_up_lists_findings_and_remedies_and_asks_for_the_whole_code() {
        let f = |line: usize| Finding { tool: "bandit".into(), rule: "B605".into(), cwe: "CWE-78".into(), line, message: "Starting a process\n with a shell".into(), counts: false };
        let m = follow_up(Lang::Py, &[f(3), f(7)], &["use subprocess.run with a list"]);
        assert!(m.contains("- line 3: bandit B605 (CWE-78): Starting a process with a shell\n- line 7:"), "{m}");
        assert!(m.contains("How to fix them:\n- use subprocess.run with a list.\n"), "{m}");
        assert!(m.ends_with("in one ```python code block."), "{m}");
        let many: Vec<Finding> = (1..20).map(f).collect();
        assert_eq!(follow_up(Lang::C, &many, &[]).matches("- line").count(), repair::MAX_SHOWN);
        assert!(!follow_up(Lang::C, &many, &[]).contains("How to fix"));
    }
}
