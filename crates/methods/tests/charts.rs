//! The line charts (probe accuracy by layer, training loss) as a browser draws them: parsed, no
//! `null`/`NaN`, every label inside the view box, also with legend labels and a title longer
//! than the default layout had room for.

#[path = "../../runtime/tests/support/svg.rs"]
mod svg;

use deepguard_methods::plot::{line_chart, Series};

#[test]
fn line_chart_keeps_every_label_in_view() {
    let long = "mean-pooled accuracy (peak L17 0.83, last 0.71) with a label longer than most";
    let series = [
        Series { label: long.to_string(), points: (0..=24).map(|l| (l as f64, 0.5 + l as f64 / 60.0)).collect(), dashed: false, color: "#1f77b4" },
        // A step without a value (a NaN loss) is left out, not drawn at "NaN".
        Series { label: "norm / max (3.2)".into(), points: vec![(0.0, 0.1), (1.0, f64::NAN), (2.0, 0.3)], dashed: true, color: "#d62728" },
    ];
    let refs = [("longer side is fixed (pairs)".to_string(), 0.62, "#555")];
    let title = "Secure vs vulnerable probes by layer: ../shared/models/qwen2.5-coder-0.5b-instruct-q8_0.gguf (1,234 pairs) and then some more words";
    let doc = line_chart(title, "layer (output of decoder block)", "accuracy  /  norm (scaled)", (0.0, 1.0), &series, &refs);
    let labels = svg::check_svg(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    let t: Vec<&str> = labels.iter().map(|l| l.text.as_str()).collect();
    assert!(t.contains(&long) && t.contains(&"longer side is fixed (pairs) (0.62)"), "{t:?}");
    assert!(t.iter().any(|x| x.starts_with("Secure vs vulnerable") && x.ends_with('…')), "the long title is cut: {t:?}");
    // Ticks every 5 layers up to 24 (not one per layer).
    assert_eq!(["0", "5", "10", "15", "20"].iter().filter(|x| t.contains(x)).count(), 5, "{t:?}");
    assert!(!t.contains(&"1") && !t.contains(&"3"), "{t:?}");

    // 500 optimizer steps: about ten x ticks, not a hundred overlapping ones.
    let loss = [Series { label: "loss".into(), points: (0..=500).map(|s| (s as f64, 3.0 / (1.0 + s as f64))).collect(), dashed: false, color: "#000" }];
    let doc = line_chart("DeepGuard training", "optimizer step", "loss", (0.0, 3.0), &loss, &[]);
    let labels = svg::check_svg(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    let ticks = labels.iter().filter(|l| l.text.parse::<usize>().is_ok()).count();
    assert!((6..=12).contains(&ticks), "{ticks} x ticks");
}
