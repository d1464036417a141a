//! `strata-bench compare old.json new.json`: the change of every endpoint present in both
//! reports (matched by phase and endpoint), flagging throughput drops and p99 rises past
//! a threshold.

use crate::report::Report;

/// One endpoint's change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub phase: String,
    pub endpoint: String,
    pub throughput_change: f64,
    pub p99_change: f64,
    pub regression: bool,
}

/// Compares two reports; `threshold` is a fraction (0.10 = 10 %).
pub fn compare(old: &Report, new: &Report, threshold: f64) -> Vec<Change> {
    let mut changes = Vec::new();
    for new_phase in &new.phases {
        let Some(old_phase) = old.phases.iter().find(|p| p.name == new_phase.name) else {
            continue;
        };
        for e in &new_phase.endpoints {
            let Some(o) = old_phase
                .endpoints
                .iter()
                .find(|o| o.endpoint == e.endpoint)
            else {
                continue;
            };
            let throughput_change = relative(o.throughput_per_sec, e.throughput_per_sec);
            let p99_change = relative(o.p99_ms, e.p99_ms);
            changes.push(Change {
                phase: new_phase.name.clone(),
                endpoint: e.endpoint.clone(),
                throughput_change,
                p99_change,
                regression: throughput_change < -threshold || p99_change > threshold,
            });
        }
    }
    changes
}

fn relative(old: f64, new: f64) -> f64 {
    if old == 0.0 { 0.0 } else { (new - old) / old }
}

/// The comparison as a Markdown table.
pub fn markdown(changes: &[Change], threshold: f64) -> String {
    let mut md = format!(
        "| phase | endpoint | throughput | p99 | verdict (±{:.0} %) |\n|---|---|---:|---:|---|\n",
        threshold * 100.0
    );
    for c in changes {
        md += &format!(
            "| {} | {} | {:+.1} % | {:+.1} % | {} |\n",
            c.phase,
            c.endpoint,
            c.throughput_change * 100.0,
            c.p99_change * 100.0,
            if c.regression { "REGRESSION" } else { "ok" }
        );
    }
    md
}

/// The same-run ratios both reports have (matched by name), old beside new, as a
/// Markdown table (empty when they share none).
pub fn ratios_markdown(old: &Report, new: &Report) -> String {
    let rows: Vec<String> = new
        .ratios
        .iter()
        .filter_map(|n| {
            let o = old.ratios.iter().find(|o| o.name == n.name)?;
            let goal = n.target.map_or(String::new(), |g| {
                format!("{g} ({})", if g.met_by(n.value) { "met" } else { "missed" })
            });
            Some(format!(
                "| {} | {:.3} | {:.3} | {goal} |\n",
                n.name, o.value, n.value
            ))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\n| ratio | old | new | target (new) |\n|---|---:|---:|---|\n{}",
        rows.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{Outcome, Recorder};
    use crate::report::Phase;
    use std::time::Duration;

    fn report(p99_ms: u64, requests: u64) -> Report {
        let recorder = Recorder::new();
        for _ in 0..requests {
            recorder.record(
                Outcome {
                    endpoint: "GET /x",
                    status: Some(200),
                },
                Duration::from_millis(p99_ms),
            );
        }
        let mut report = Report::new("t", serde_json::Value::Null, serde_json::Value::Null);
        report.phases.push(Phase {
            name: "p".into(),
            load: "l".into(),
            duration_secs: 1.0,
            endpoints: recorder.summarize(Duration::from_secs(1)),
        });
        report
    }

    #[test]
    fn slower_or_fewer_is_a_regression_and_within_the_threshold_is_not() {
        let base = report(10, 100);
        assert!(!compare(&base, &report(10, 95), 0.10)[0].regression);
        assert!(
            compare(&base, &report(10, 80), 0.10)[0].regression,
            "throughput fell 20 %"
        );
        assert!(
            compare(&base, &report(13, 100), 0.10)[0].regression,
            "p99 rose 30 %"
        );
        assert!(markdown(&compare(&base, &report(13, 100), 0.10), 0.10).contains("REGRESSION"));
    }
}
