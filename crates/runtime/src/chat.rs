//! Chat templates: the model's own Jinja template (from GGUF or `tokenizer_config.json`),
//! rendered with minijinja; ChatML when a model ships none.
//!
//! [`encode`] turns messages into prompt tokens with the template's own markers as special
//! tokens and every message's content as plain text, so a message cannot open or close a turn
//! by writing `<|im_end|>` or `<|im_start|>system`.

use crate::tokenizer::{Piece, Tokenizer};
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Renders `messages` with `template` (ChatML if `None`), ending with the assistant's turn opener.
pub fn render(template: Option<&str>, messages: &[Message], bos: &str, eos: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template.unwrap_or(CHATML)).map_err(|e| anyhow!("chat template does not parse: {e}"))?;
    let tmpl = env.get_template("chat")?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| anyhow!("chat template failed to render: {e}"))
}

/// A piece of a rendered chat: the template's own text, or a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Template(String),
    Content(String),
}

/// Marks message `i`'s content while the template renders: two noncharacters around the index,
/// which no template writes.
const OPEN: char = '\u{FDD0}';
const CLOSE: char = '\u{FDD1}';

/// Renders `messages` like [`render`], but says which text is the template's and which is a
/// message's content. The template renders with a placeholder in each message's content; the
/// contents are then put in the placeholders' places as they are (a template that changes a
/// content, e.g. trims it, has that change undone; one that branches on a content sees the
/// placeholder). Joined, the parts are the prompt.
pub fn render_parts(template: Option<&str>, messages: &[Message], bos: &str, eos: &str) -> Result<Vec<Part>> {
    let marked: Vec<Message> = messages.iter().enumerate().map(|(i, m)| Message { role: m.role.clone(), content: format!("{OPEN}{i}{CLOSE}") }).collect();
    let text = render(template, &marked, bos, eos)?;
    let mut parts = Vec::new();
    let mut template_text = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(OPEN) {
        let after = &rest[at + OPEN.len_utf8()..];
        let index = after.find(CLOSE).and_then(|end| after[..end].parse::<usize>().ok().filter(|&i| i < messages.len()).map(|i| (i, end)));
        match index {
            Some((i, end)) => {
                template_text.push_str(&rest[..at]);
                if !template_text.is_empty() {
                    parts.push(Part::Template(std::mem::take(&mut template_text)));
                }
                parts.push(Part::Content(messages[i].content.clone()));
                rest = &after[end + CLOSE.len_utf8()..];
            }
            None => {
                template_text.push_str(&rest[..at + OPEN.len_utf8()]);
                rest = after;
            }
        }
    }
    template_text.push_str(rest);
    if !template_text.is_empty() {
        parts.push(Part::Template(template_text));
    }
    Ok(parts)
}

/// The prompt tokens of `messages` with the tokenizer's chat template: the template's text is
/// read with its special tokens (`<|im_start|>`, the BOS it writes), every message's content as
/// plain text ([`Tokenizer::encode_text`]). The text between two of the template's special
/// tokens is encoded as one piece, so an honest prompt gets exactly the tokens of encoding the
/// rendered text whole. BOS is prepended as [`Tokenizer::encode`] does.
pub fn encode(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
    if messages.is_empty() {
        bail!("no messages to render");
    }
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    let parts = render_parts(tok.chat_template.as_deref(), messages, &name(tok.bos_id), &name(tok.eos_id))?;
    let mut ids = Vec::new();
    if tok.add_bos {
        ids.extend(tok.bos_id);
    }
    let mut run = String::new();
    for p in &parts {
        match p {
            Part::Content(c) => run.push_str(c),
            Part::Template(t) => {
                for piece in tok.split_special(t) {
                    match piece {
                        Piece::Text(s) => run.push_str(s),
                        Piece::Special(id) => {
                            ids.extend(tok.encode_text(&run)?);
                            run.clear();
                            ids.push(id);
                        }
                    }
                }
            }
        }
    }
    ids.extend(tok.encode_text(&run)?);
    Ok(ids)
}
