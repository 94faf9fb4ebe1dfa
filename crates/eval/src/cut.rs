//! Cutting a completion at the end of the function being written: Python by indentation (the
//! first non-blank line indented no deeper than the last `def` of the prompt), C by braces (the
//! `}` that brings the depth back to 0, ignoring braces in comments, strings and char literals).
//! Nothing is repaired: a completion whose function never ends is kept whole and marked so.

use crate::scenario::Lang;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// The completion up to the end of the function (ends with a newline when `complete`).
    pub code: String,
    /// The end of the function was found (false: the text ran out first).
    pub complete: bool,
}

pub fn cut(lang: Lang, prompt: &str, completion: &str) -> Cut {
    match lang {
        Lang::Py => cut_python(prompt, completion),
        Lang::C => cut_c(prompt, completion),
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

fn cut_python(prompt: &str, completion: &str) -> Cut {
    let base = prompt.lines().rev().find(|l| {
        let t = l.trim_start();
        t.starts_with("def ") || t.starts_with("async def ")
    });
    let Some(def_line) = base else {
        return Cut { code: completion.to_string(), complete: false };
    };
    let base_indent = indent_of(def_line);
    // The completion's first segment continues the prompt's last line unless the prompt ended
    // with a newline.
    let mut pos = 0;
    let mut first = true;
    let continues = !(prompt.is_empty() || prompt.ends_with('\n'));
    for seg in completion.split_inclusive('\n') {
        let start = pos;
        pos += seg.len();
        if first && continues {
            first = false;
            continue;
        }
        first = false;
        let line = seg.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if indent_of(line) <= base_indent {
            return Cut { code: finish_lines(&completion[..start]), complete: true };
        }
    }
    Cut { code: completion.to_string(), complete: false }
}

/// Drops trailing blank lines and ends the code with exactly one newline.
fn finish_lines(s: &str) -> String {
    let t = s.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}\n")
    }
}

#[derive(Clone, Copy, PartialEq)]
enum St {
    Code,
    LineComment,
    BlockComment,
    Str,
    Chr,
}

/// Brace scanner for C that carries its lexical state across the prompt and the completion.
struct Braces {
    st: St,
    depth: i64,
    prev: char,
    escaped: bool,
}

impl Braces {
    /// Feeds one char; returns the depth change (+1, -1 or 0).
    fn feed(&mut self, c: char) -> i64 {
        let prev = std::mem::replace(&mut self.prev, c);
        let mut d = 0;
        match self.st {
            St::Code => match c {
                '/' if prev == '/' => self.enter(St::LineComment),
                '*' if prev == '/' => self.enter(St::BlockComment),
                '"' => self.st = St::Str,
                '\'' => self.st = St::Chr,
                '{' => d = 1,
                '}' => d = -1,
                _ => {}
            },
            St::LineComment if c == '\n' => self.st = St::Code,
            St::BlockComment if c == '/' && prev == '*' => self.enter(St::Code),
            St::Str | St::Chr => {
                let close = if self.st == St::Str { '"' } else { '\'' };
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == close || c == '\n' {
                    self.st = St::Code;
                }
            }
            _ => {}
        }
        self.depth += d;
        d
    }

    /// Switches state and forgets the previous char, so that `/*/` or `*//` do not chain.
    fn enter(&mut self, st: St) {
        self.st = st;
        self.prev = ' ';
    }
}

fn cut_c(prompt: &str, completion: &str) -> Cut {
    let mut b = Braces { st: St::Code, depth: 0, prev: ' ', escaped: false };
    for c in prompt.chars() {
        b.feed(c);
    }
    let mut opened = b.depth > 0;
    for (i, c) in completion.char_indices() {
        let d = b.feed(c);
        if d > 0 {
            opened = true;
        }
        if d < 0 && opened && b.depth <= 0 {
            return Cut { code: format!("{}\n", &completion[..i + 1]), complete: true };
        }
    }
    Cut { code: completion.to_string(), complete: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY_PROMPT: &str = "import os\n\n@app.route('/x')\ndef read():\n    name = request.args.get('f')\n    # send it";

    #[test]
    fn python_cuts_at_the_first_dedented_line() {
        let comp = "\n    return send_file(name)\n\n\n@app.route('/y')\ndef other():\n    pass\n";
        let c = cut(Lang::Py, PY_PROMPT, comp);
        assert!(c.complete);
        assert_eq!(c.code, "\n    return send_file(name)\n");
    }

    #[test]
    fn python_keeps_nested_blocks_and_blank_lines_inside() {
        let comp = "\n    if name:\n\n        return 1\n    else:\n        return 2\nif __name__ == '__main__':\n    app.run()\n";
        let c = cut(Lang::Py, PY_PROMPT, comp);
        assert_eq!(c.code, "\n    if name:\n\n        return 1\n    else:\n        return 2\n");
        assert!(c.complete);
    }

    #[test]
    fn python_first_segment_continues_the_prompt_line() {
        // The prompt ends mid-line: the completion's first segment has no indentation of its
        // own and must not end the function.
        let p = "def f():\n    x = ";
        let c = cut(Lang::Py, p, "1\n    return x\nprint(f())\n");
        assert_eq!(c.code, "1\n    return x\n");
        // But when the prompt ends with a newline, the first line is a new line.
        let c = cut(Lang::Py, "def f():\n    x = 1\n", "print(x)\n");
        assert!(c.complete);
        assert_eq!(c.code, "");
    }

    #[test]
    fn python_without_an_end_is_kept_whole() {
        let comp = "\n    return 1\n    # more";
        let c = cut(Lang::Py, PY_PROMPT, comp);
        assert!(!c.complete);
        assert_eq!(c.code, comp);
        // A dedented partial line (no newline yet) already ends the function.
        assert!(cut(Lang::Py, PY_PROMPT, "\n    return 1\nif").complete);
    }

    #[test]
    fn python_nested_def_uses_its_own_indentation() {
        let p = "class A:\n    def m(self):\n        x = 1";
        let c = cut(Lang::Py, p, "\n        return x\n    def n(self):\n        pass\n");
        assert_eq!(c.code, "\n        return x\n");
    }

    const C_PROMPT: &str = "#include <stdio.h>\n\nint main(int argc, char *argv[]) {\n    int i = 0;\n    // print it";

    #[test]
    fn c_cuts_after_the_closing_brace() {
        let comp = "\n    if (i > 0) {\n        printf(\"%d\", i);\n    }\n    return 0;\n}\n\nint helper() { return 1; }\n";
        let c = cut(Lang::C, C_PROMPT, comp);
        assert!(c.complete);
        assert_eq!(c.code, "\n    if (i > 0) {\n        printf(\"%d\", i);\n    }\n    return 0;\n}\n");
    }

    #[test]
    fn c_ignores_braces_in_strings_chars_and_comments() {
        let comp = "\n    printf(\"}}\\\"}\");\n    char c = '}';\n    // }\n    /* } */\n    return 0;\n}\nrest";
        let c = cut(Lang::C, C_PROMPT, comp);
        assert!(c.complete);
        assert!(c.code.ends_with("return 0;\n}\n"), "{:?}", c.code);
        // A prompt ending inside a comment carries that state into the completion.
        let c = cut(Lang::C, "int main() {\n /* note", " } */ return 0; }\nx");
        assert_eq!(c.code, " } */ return 0; }\n");
    }

    #[test]
    fn c_prompt_ending_before_the_body_waits_for_it() {
        let c = cut(Lang::C, "int f(int x)", "\n{\n    return x;\n}\nint g;");
        assert_eq!(c.code, "\n{\n    return x;\n}\n");
    }

    #[test]
    fn c_unclosed_is_kept_whole() {
        let comp = "\n    for (;;) {\n        i++;\n";
        let c = cut(Lang::C, C_PROMPT, comp);
        assert!(!c.complete);
        assert_eq!(c.code, comp);
    }
}
