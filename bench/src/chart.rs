//! The report's SVG: for every phase, a bar group of latency percentiles per endpoint
//! (p50, p90, p99, p99.9) and a line of completed requests per second. Plain SVG text,
//! readable in any browser.

use std::fmt::Write;

use crate::report::Report;

const WIDTH: f64 = 900.0;
const PANEL: f64 = 260.0;
const MARGIN: f64 = 60.0;
const COLORS: [&str; 4] = ["#4c78a8", "#f58518", "#e45756", "#72b7b2"];

/// The whole chart.
pub fn svg(report: &Report) -> String {
    let height = MARGIN + report.phases.len().max(1) as f64 * (2.0 * PANEL + MARGIN);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"20\" y=\"30\" font-size=\"18\">strata-bench {} ({})</text>\n",
        escape(&report.scenario),
        escape(&report.git_commit)
    );
    for (i, phase) in report.phases.iter().enumerate() {
        let top = MARGIN + i as f64 * (2.0 * PANEL + MARGIN);
        percentiles(&mut out, phase, top);
        throughput(&mut out, phase, top + PANEL + 20.0);
    }
    out += "</svg>\n";
    out
}

fn percentiles(out: &mut String, phase: &crate::report::Phase, top: f64) {
    let _ = writeln!(
        out,
        "<text x=\"20\" y=\"{}\" font-size=\"14\">{}: latency percentiles (ms)</text>",
        top + 10.0,
        escape(&phase.name)
    );
    let max = phase
        .endpoints
        .iter()
        .map(|e| e.p999_ms)
        .fold(0.0f64, f64::max)
        .max(0.001);
    let plot_h = PANEL - 60.0;
    let base = top + 30.0 + plot_h;
    let group_w = (WIDTH - 2.0 * MARGIN) / phase.endpoints.len().max(1) as f64;
    for (g, e) in phase.endpoints.iter().enumerate() {
        let x0 = MARGIN + g as f64 * group_w;
        for (k, (label, value)) in [
            ("p50", e.p50_ms),
            ("p90", e.p90_ms),
            ("p99", e.p99_ms),
            ("p99.9", e.p999_ms),
        ]
        .iter()
        .enumerate()
        {
            let h = plot_h * value / max;
            let w = group_w / 5.0;
            let x = x0 + k as f64 * w + w / 2.0;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{} {label}: {value:.2} ms</title></rect>",
                base - h,
                w * 0.9,
                COLORS[k],
                escape(&e.endpoint)
            );
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{value:.1}</text>",
                x,
                base - h - 3.0
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            x0 + 4.0,
            base + 14.0,
            escape(&e.endpoint)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{MARGIN}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"black\"/>",
        WIDTH - MARGIN
    );
}

fn throughput(out: &mut String, phase: &crate::report::Phase, top: f64) {
    let _ = writeln!(
        out,
        "<text x=\"20\" y=\"{}\" font-size=\"14\">{}: completed requests per second</text>",
        top + 10.0,
        escape(&phase.name)
    );
    let seconds = phase
        .endpoints
        .iter()
        .map(|e| e.per_second.len())
        .max()
        .unwrap_or(0);
    let totals: Vec<u64> = (0..seconds)
        .map(|s| {
            phase
                .endpoints
                .iter()
                .map(|e| e.per_second.get(s).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(1).max(1) as f64;
    let plot_h = PANEL - 60.0;
    let base = top + 30.0 + plot_h;
    let step = (WIDTH - 2.0 * MARGIN) / seconds.max(2).saturating_sub(1) as f64;
    let points: Vec<String> = totals
        .iter()
        .enumerate()
        .map(|(s, n)| {
            format!(
                "{:.1},{:.1}",
                MARGIN + s as f64 * step,
                base - plot_h * *n as f64 / max
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"#4c78a8\" stroke-width=\"2\" points=\"{}\"/>",
        points.join(" ")
    );
    let _ = writeln!(
        out,
        "<line x1=\"{MARGIN}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"black\"/>",
        WIDTH - MARGIN
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\">peak {max:.0}/s</text>",
        MARGIN,
        top + 26.0
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
