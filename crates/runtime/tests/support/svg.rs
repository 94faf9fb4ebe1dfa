//! The hand-written SVG charts read as a browser would draw them, shared by the chart tests of
//! every crate (included with `#[path]`). [`check_svg`] parses the document (every tag closed in
//! order, a `viewBox` on the root) and reports each problem a reader would see: a geometry
//! number that is not finite, text that reads `null`, `NaN` or `inf`, and a label that leaves the
//! view box. A label's extent is estimated at 0.6 em per character (wider than the average glyph
//! of a sans-serif font), from its font size (inherited), `text-anchor` and a `rotate(-90 x y)`.
#![allow(dead_code)]

use std::collections::HashMap;

/// One drawn text: its content and its estimated box (left, top, right, bottom).
#[derive(Debug, Clone)]
pub struct Label {
    pub text: String,
    pub bbox: (f64, f64, f64, f64),
}

struct Open {
    name: String,
    attrs: HashMap<String, String>,
    font_size: f64,
    text: String,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

fn attrs(tag: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut rest = tag.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| format!("attribute without a value in <{tag}>"))?;
        let name = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'').ok_or_else(|| format!("unquoted attribute {name} in <{tag}>"))?;
        let end = after[1..].find(quote).ok_or_else(|| format!("unterminated attribute {name} in <{tag}>"))?;
        out.insert(name, unescape(&after[1..1 + end]));
        rest = after[end + 2..].trim_start();
    }
    Ok(out)
}

fn num(a: &HashMap<String, String>, k: &str) -> f64 {
    a.get(k).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// Parses `svg` and checks it; the labels on success, every problem found otherwise.
pub fn check_svg(svg: &str) -> Result<Vec<Label>, String> {
    let mut problems = Vec::new();
    let mut labels = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut view: Option<(f64, f64, f64, f64)> = None;
    let mut i = 0;
    while let Some(lt) = svg[i..].find('<') {
        let text = &svg[i..i + lt];
        if let Some(top) = stack.last_mut() {
            top.text += &unescape(text);
        }
        let start = i + lt;
        let gt = svg[start..].find('>').ok_or("a tag is never closed")? + start;
        let tag = &svg[start + 1..gt];
        i = gt + 1;
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or_else(|| format!("</{name}> closes nothing"))?;
            if open.name != name.trim() {
                return Err(format!("<{}> closed by </{name}>", open.name));
            }
            if open.name == "text" {
                labels.push(label(&open, &mut problems));
            } else if open.name == "title" {
                // A tooltip: never drawn, but still no null/NaN in it.
                bad_words(&open.text, &mut problems);
            }
            if let Some(parent) = stack.last_mut() {
                if parent.name == "text" && open.name == "tspan" {
                    parent.text += &open.text;
                }
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let (name, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let a = attrs(rest)?;
        if name == "svg" && stack.is_empty() {
            let vb: Vec<f64> = a.get("viewBox").ok_or("the root <svg> has no viewBox")?.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            if vb.len() != 4 {
                return Err(format!("viewBox {:?} is not four numbers", a.get("viewBox")));
            }
            view = Some((vb[0], vb[1], vb[0] + vb[2], vb[1] + vb[3]));
        }
        for k in ["x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "width", "height"] {
            if let Some(v) = a.get(k) {
                if v.parse::<f64>().is_ok_and(|x| !x.is_finite()) || v.to_lowercase().contains("nan") {
                    problems.push(format!("<{name}> {k}=\"{v}\""));
                }
            }
        }
        if let Some(p) = a.get("points") {
            if p.split([' ', ',']).filter(|s| !s.is_empty()).any(|s| !s.parse::<f64>().is_ok_and(f64::is_finite)) {
                problems.push(format!("<{name}> points=\"{p}\""));
            }
        }
        let inherited = stack.last().map_or(16.0, |o| o.font_size);
        let font_size = a.get("font-size").and_then(|v| v.parse().ok()).unwrap_or(inherited);
        let open = Open { name: name.to_string(), attrs: a, font_size, text: String::new() };
        if self_closing {
            continue;
        }
        stack.push(open);
    }
    if let Some(o) = stack.last() {
        return Err(format!("<{}> is never closed", o.name));
    }
    let (x0, y0, x1, y1) = view.ok_or("no <svg> root")?;
    for l in &labels {
        let (a, b, c, d) = l.bbox;
        if a < x0 - 0.5 || b < y0 - 0.5 || c > x1 + 0.5 || d > y1 + 0.5 {
            problems.push(format!("label {:?} at ({a:.0}, {b:.0})-({c:.0}, {d:.0}) leaves the view box ({x0}, {y0})-({x1}, {y1})", l.text));
        }
    }
    if problems.is_empty() {
        Ok(labels)
    } else {
        Err(problems.join("\n"))
    }
}

fn bad_words(text: &str, problems: &mut Vec<String>) {
    let lower = text.to_lowercase();
    if ["null", "nan", "inf", "undefined"].iter().any(|w| lower.split(|c: char| !c.is_alphanumeric()).any(|t| t == *w)) {
        problems.push(format!("text {text:?}"));
    }
}

fn label(t: &Open, problems: &mut Vec<String>) -> Label {
    bad_words(&t.text, problems);
    let (x, y, fs) = (num(&t.attrs, "x"), num(&t.attrs, "y"), t.font_size);
    let w = 0.6 * fs * t.text.trim().chars().count() as f64;
    let left = match t.attrs.get("text-anchor").map(String::as_str) {
        Some("middle") => x - w / 2.0,
        Some("end") => x - w,
        _ => x,
    };
    let (mut a, mut b, mut c, mut d) = (left, y - 0.8 * fs, left + w, y + 0.25 * fs);
    if let Some(r) = t.attrs.get("transform").and_then(|v| v.strip_prefix("rotate(")).and_then(|v| v.strip_suffix(')')) {
        let v: Vec<f64> = r.split([' ', ',']).filter_map(|s| s.parse().ok()).collect();
        if v.len() == 3 && v[0] == -90.0 {
            // (x, y) -> (cx + (y - cy), cy - (x - cx))
            let (cx, cy) = (v[1], v[2]);
            let rot = |x: f64, y: f64| (cx + (y - cy), cy - (x - cx));
            let (p, q) = (rot(a, b), rot(c, d));
            (a, b, c, d) = (p.0.min(q.0), p.1.min(q.1), p.0.max(q.0), p.1.max(q.1));
        } else {
            problems.push(format!("label {:?}: transform {r:?} not understood", t.text));
        }
    }
    Label { text: t.text.trim().to_string(), bbox: (a, b, c, d) }
}
