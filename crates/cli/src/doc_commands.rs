//! The README's and the docs' command lines parse as written: every `deepguard ...` line of an
//! indented block (continuations joined) goes through clap's `try_parse_from` and its `--method`
//! specs round-trip; inline `deepguard ...` code spans in the prose (often a mention, not a whole
//! command) name only flags that exist; none uses a deprecated spelling. Usage synopses
//! (`[--flag VALUE]`, `A|B`, `...`) are not commands and are left out.

use crate::Cli;
use clap::{CommandFactory, Parser};
use deepguard_methods::spec::MethodSpec;
use std::path::{Path, PathBuf};

/// Splits a shell line into words (single and double quotes, backslash escapes), stopping at a
/// comment, a pipe, `&&`, `;` or a redirection.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            Some(_) => cur.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    has = true;
                }
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                        has = true;
                    }
                }
                ' ' | '\t' => {
                    if has {
                        out.push(std::mem::take(&mut cur));
                        has = false;
                    }
                }
                '#' if !has => break,
                '|' | ';' | '>' | '&' => break,
                _ => {
                    cur.push(c);
                    has = true;
                }
            },
        }
    }
    if has {
        out.push(cur);
    }
    out
}

/// The `deepguard` command lines of a markdown text: line number, words (joined by U+0001), and
/// whether it is a whole command (an indented block) rather than an inline mention.
fn command_lines(text: &str) -> Vec<(usize, String, bool)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let mut line = lines[i].to_string();
        while line.trim_end().ends_with('\\') && i + 1 < lines.len() {
            line = format!("{} {}", line.trim_end().trim_end_matches('\\'), lines[i + 1].trim());
            i += 1;
        }
        i += 1;
        if line.starts_with("    ") || line.starts_with('\t') {
            let l = line.trim().trim_start_matches("$ ");
            out.push((start + 1, l.to_string(), true));
        } else {
            // Inline code spans.
            for (k, span) in line.split('`').enumerate() {
                if k % 2 == 1 {
                    out.push((start + 1, span.to_string(), false));
                }
            }
        }
    }
    out.into_iter()
        .filter_map(|(n, l, whole)| {
            let w = words(&l);
            let first = w.iter().position(|t| !(t.contains('=') && t.chars().next().is_some_and(|c| c.is_ascii_uppercase())))?;
            let prog = w.get(first)?;
            (prog == "deepguard" || prog.ends_with("/deepguard")).then(|| (n, w[first..].join("\u{1}"), whole))
        })
        .filter(|(_, l, _)| !is_synopsis(l))
        .collect()
}

/// A usage synopsis, not a command: optional parts, alternatives, elisions, placeholders.
fn is_synopsis(l: &str) -> bool {
    l.split('\u{1}').any(|w| w.starts_with('[') || w.ends_with(']') || w.contains("...") || w.contains('…') || w.contains('{') || w.contains('<') || (w.contains('|') && !w.contains(':')))
}

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut d: Vec<PathBuf> = std::fs::read_dir(root.join("docs")).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
    d.sort();
    files.extend(d);
    files
}

#[test]
fn shell_words_split_like_a_shell() {
    assert_eq!(words("deepguard eval -s 'a b' --out \"x y\" # note"), ["deepguard", "eval", "-s", "a b", "--out", "x y"]);
    assert_eq!(words("DEEPGUARD_PROFILE=1 deepguard bench | head"), ["DEEPGUARD_PROFILE=1", "deepguard", "bench"]);
    assert!(is_synopsis("deepguard\u{1}eval\u{1}[--data\u{1}DIR]"));
    assert!(!is_synopsis("deepguard\u{1}compare\u{1}--method\u{1}guard:g+steer:v:auto"));
}

#[test]
fn every_command_in_the_readme_and_docs_parses() {
    let cmd = Cli::command();
    let (mut checked, mut problems) = (0, Vec::new());
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for (n, line, whole) in command_lines(&text) {
            let mut argv: Vec<String> = line.split('\u{1}').map(str::to_string).collect();
            argv[0] = "deepguard".into();
            checked += 1;
            let shown = argv.join(" ");
            match Cli::try_parse_from(&argv) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) => {}
                Err(e) if !whole && !matches!(e.kind(), clap::error::ErrorKind::UnknownArgument | clap::error::ErrorKind::InvalidSubcommand) => {}
                Err(e) => problems.push(format!("{name}:{n}: `{shown}`: {}", e.to_string().lines().next().unwrap_or_default())),
            }
            let os: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
            for w in crate::args::deprecations(&cmd, &os) {
                problems.push(format!("{name}:{n}: `{shown}`: {w}"));
            }
            for (i, a) in argv.iter().enumerate() {
                if a == "--method" {
                    if let Some(Ok(spec)) = argv.get(i + 1).map(|s| s.parse::<MethodSpec>()) {
                        if spec.to_string().parse::<MethodSpec>().ok() != Some(spec.clone()) {
                            problems.push(format!("{name}:{n}: --method {} does not round-trip (prints as {spec})", argv[i + 1]));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} doc command(s) do not parse:\n{}", problems.len(), problems.join("\n"));
    assert!(checked > 30, "only {checked} command lines found in the README and docs");
}

#[test]
fn the_method_examples_in_help_round_trip() {
    // The concrete examples in --method's help text (placeholders in capitals are forms, not
    // examples).
    let examples: Vec<&str> = deepguard_methods::spec::HELP.split('`').skip(1).step_by(2).filter(|e| (e.contains(':') || *e == "base") && !e.chars().any(|c| c.is_ascii_uppercase())).collect();
    assert!(examples.len() >= 4, "{examples:?}");
    for e in examples {
        let spec: MethodSpec = e.parse().unwrap_or_else(|err| panic!("{e}: {err:#}"));
        assert_eq!(spec.to_string().parse::<MethodSpec>().unwrap(), spec, "{e}");
    }
}
