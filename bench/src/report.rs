//! A run's report: machine-readable JSON (with run metadata) and a Markdown summary.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::recorder::EndpointSummary;

/// One measured phase of a scenario (e.g. "me alone", "me during the storm").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub load: String,
    pub duration_secs: f64,
    pub endpoints: Vec<EndpointSummary>,
}

impl Phase {
    /// Answered requests per second of its first endpoint (the one a scenario's phase
    /// loads).
    pub fn ok_rate(&self) -> f64 {
        self.endpoints
            .first()
            .map_or(0.0, |e| e.ok as f64 / self.duration_secs)
    }

    /// Requests its first endpoint sent (answered or not).
    pub fn requests(&self) -> u64 {
        self.endpoints.first().map_or(0, |e| e.requests)
    }

    /// Median latency of its first endpoint, in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.endpoints.first().map_or(f64::NAN, |e| e.p50_ms)
    }

    /// 99th-percentile latency of its first endpoint, in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.endpoints.first().map_or(f64::NAN, |e| e.p99_ms)
    }
}

/// A figure compared with a baseline measured in the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub numerator: String,
    pub denominator: String,
    /// The goal the ratio is held to, when it has one (e.g. `>= 0.8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Goal>,
}

/// A bound a ratio should meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    /// Whether `value` meets the goal.
    pub fn met_by(self, value: f64) -> bool {
        match self {
            Self::AtLeast(bound) => value >= bound,
            Self::AtMost(bound) => value <= bound,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AtLeast(bound) => write!(f, "≥ {bound}"),
            Self::AtMost(bound) => write!(f, "≤ {bound}"),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub started_at_unix: u64,
    pub git_commit: String,
    pub cores: usize,
    pub config: serde_json::Value,
    pub target: serde_json::Value,
    /// Baseline figures measured in the same run (e.g. raw argon2 hashes per second).
    pub baselines: serde_json::Map<String, serde_json::Value>,
    pub phases: Vec<Phase>,
    pub ratios: Vec<Ratio>,
}

impl Report {
    /// A report with the run metadata filled in.
    pub fn new(scenario: &str, config: serde_json::Value, target: serde_json::Value) -> Self {
        Self {
            scenario: scenario.to_owned(),
            started_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            git_commit: git_commit(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            config,
            target,
            baselines: serde_json::Map::new(),
            phases: Vec::new(),
            ratios: Vec::new(),
        }
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# strata-bench: {}\n\ncommit `{}` · {} cores · config `{}`\n\n",
            self.scenario, self.git_commit, self.cores, self.config
        );
        if !self.ratios.is_empty() {
            md += "## Ratios (same run)\n\n| ratio | value | numerator | denominator | target |\n|---|---:|---|---|---|\n";
            for r in &self.ratios {
                let target = r.target.map_or(String::new(), |goal| {
                    let verdict = if goal.met_by(r.value) {
                        "met"
                    } else {
                        "missed"
                    };
                    format!("{goal} ({verdict})")
                });
                md += &format!(
                    "| {} | {:.3} | {} | {} | {} |\n",
                    r.name, r.value, r.numerator, r.denominator, target
                );
            }
            md += "\n";
        }
        if !self.baselines.is_empty() {
            md += "## Baselines\n\n";
            for (name, value) in &self.baselines {
                md += &format!("- {name}: {value}\n");
            }
            md += "\n";
        }
        for phase in &self.phases {
            md += &format!(
                "## {} ({}, {:.0} s)\n\n",
                phase.name, phase.load, phase.duration_secs
            );
            md += "| endpoint | requests | ok | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | statuses |\n";
            md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
            for e in &phase.endpoints {
                let statuses: Vec<String> =
                    e.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
                md += &format!(
                    "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                    e.endpoint,
                    e.requests,
                    e.ok,
                    e.throughput_per_sec,
                    e.p50_ms,
                    e.p90_ms,
                    e.p99_ms,
                    e.p999_ms,
                    e.max_ms,
                    statuses.join(" ")
                );
            }
            md += "\n";
        }
        md
    }

    /// Writes `<out>/<scenario>.json`, `.md` and `.svg`; returns their paths.
    pub fn write(&self, out: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out)?;
        let json = out.join(format!("{}.json", self.scenario));
        std::fs::write(
            &json,
            serde_json::to_string_pretty(self).expect("reports serialize") + "\n",
        )?;
        let md = out.join(format!("{}.md", self.scenario));
        std::fs::write(&md, self.markdown())?;
        let svg = out.join(format!("{}.svg", self.scenario));
        std::fs::write(&svg, crate::chart::svg(self))?;
        Ok(vec![json, md, svg])
    }

    /// Reads a report written by [`Report::write`].
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a strata-bench report: {e}", path.display()))
    }
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The median over the turns of a paired measurement of one side's figure ÷ the
/// other's in the same turn, with the lowest and the highest of those ratios (None when
/// no turn has both). Each turn runs the two sides back to back, so a turn's ratio
/// compares them under the same state of the machine; the median is what most turns
/// show, where a figure pooled over all turns lets one slow spell (a stall of the disk,
/// a busy neighbour) during one side's turn move the whole comparison.
pub fn median_turn_ratio(numerators: &[f64], denominators: &[f64]) -> Option<(f64, f64, f64)> {
    let mut ratios: Vec<f64> = numerators
        .iter()
        .zip(denominators)
        .filter(|(_, d)| **d > 0.0)
        .map(|(n, d)| n / d)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let median = if ratios.len().is_multiple_of(2) {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    } else {
        ratios[mid]
    };
    Some((median, ratios[0], ratios[ratios.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goal_ratio_is_the_median_of_the_turns_and_one_slow_turn_does_not_move_it() {
        // Turn 3 of the first layout hit a slow spell: its pooled ratio drops to 0.82,
        // the median of the turns stays where the other turns are.
        let many = [950.0, 960.0, 300.0, 940.0, 955.0];
        let few = [1000.0, 1000.0, 1000.0, 1000.0, 1000.0];
        let (median, lowest, highest) = median_turn_ratio(&many, &few).unwrap();
        assert_eq!((median, lowest, highest), (0.95, 0.3, 0.96));
        let pooled = many.iter().sum::<f64>() / few.iter().sum::<f64>();
        assert!(pooled < 0.9 && median >= 0.9);
        // An even count takes the mean of the middle two; a turn without a denominator
        // is left out, and no turn at all gives no ratio.
        assert_eq!(median_turn_ratio(&[1.0, 3.0], &[1.0, 1.0]).unwrap().0, 2.0);
        assert_eq!(
            median_turn_ratio(&[5.0, 1.0], &[0.0, 1.0]).unwrap(),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(median_turn_ratio(&[], &[]), None);
        // A side that is slow in most turns is not hidden.
        let (median, ..) = median_turn_ratio(&[800.0, 820.0, 990.0], &[1000.0; 3]).unwrap();
        assert_eq!(median, 0.82);
    }
}
