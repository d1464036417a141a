//! What a run measured: per endpoint, a latency histogram (microseconds, HdrHistogram,
//! 3 significant digits, up to 5 minutes) and counts by status, plus completions per
//! second for the throughput timeline.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The result of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Which endpoint (a route template such as `GET /v1/me`).
    pub endpoint: &'static str,
    /// The HTTP status, or `None` when no answer came (connection error, timeout).
    pub status: Option<u16>,
}

struct EndpointData {
    latency: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    per_second: Vec<u64>,
}

impl EndpointData {
    /// Nothing recorded yet: latencies from 1 µs to 5 minutes, 3 significant digits.
    fn empty() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 300_000_000, 3).expect("valid histogram bounds"),
            statuses: BTreeMap::new(),
            per_second: Vec::new(),
        }
    }
}

/// Collects outcomes from many tasks.
pub struct Recorder {
    started: Instant,
    endpoints: Mutex<BTreeMap<&'static str, EndpointData>>,
}

/// Percentiles and counts of one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointSummary {
    pub endpoint: String,
    pub requests: u64,
    /// Requests that got a 2xx or 3xx.
    pub ok: u64,
    /// Count per status (`"none"` for no answer).
    pub statuses: BTreeMap<String, u64>,
    pub throughput_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Completions in each second of the run.
    pub per_second: Vec<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder; its clock starts now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            endpoints: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one outcome and its latency.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        let mut endpoints = self.endpoints.lock().expect("recorder lock");
        let data = endpoints
            .entry(outcome.endpoint)
            .or_insert_with(EndpointData::empty);
        let micros = (latency.as_micros() as u64).clamp(1, 300_000_000);
        data.latency.record(micros).expect("clamped into bounds");
        let status = outcome
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into());
        *data.statuses.entry(status).or_default() += 1;
        let second = self.started.elapsed().as_secs() as usize;
        if data.per_second.len() <= second {
            data.per_second.resize(second + 1, 0);
        }
        data.per_second[second] += 1;
    }

    /// Adds everything `other` recorded: its latencies and statuses, and its
    /// completions per second after this recorder's own (turns of one side of a paired
    /// measurement, pooled into one phase, their timelines back to back).
    pub fn absorb(&self, other: &Recorder) {
        let theirs = other.endpoints.lock().expect("recorder lock");
        let mut ours = self.endpoints.lock().expect("recorder lock");
        for (endpoint, data) in theirs.iter() {
            let mine = ours.entry(endpoint).or_insert_with(EndpointData::empty);
            mine.latency
                .add(&data.latency)
                .expect("histograms of the same bounds");
            for (status, n) in &data.statuses {
                *mine.statuses.entry(status.clone()).or_default() += n;
            }
            mine.per_second.extend_from_slice(&data.per_second);
        }
    }

    /// Requests recorded so far that were answered (2xx or 3xx): what a turn's rate
    /// counts.
    pub fn answered(&self) -> u64 {
        let (requests, failed) = self.totals();
        requests - failed
    }

    /// Requests recorded so far, and how many of them failed (no answer, 4xx, 5xx).
    pub fn totals(&self) -> (u64, u64) {
        let endpoints = self.endpoints.lock().expect("recorder lock");
        endpoints.values().fold((0, 0), |(requests, errors), data| {
            let failed: u64 = data
                .statuses
                .iter()
                .filter(|(s, _)| !(s.starts_with('2') || s.starts_with('3')))
                .map(|(_, n)| n)
                .sum();
            (requests + data.latency.len(), errors + failed)
        })
    }

    /// Summaries of every endpoint, for a run that lasted `elapsed`.
    pub fn summarize(&self, elapsed: Duration) -> Vec<EndpointSummary> {
        let endpoints = self.endpoints.lock().expect("recorder lock");
        endpoints
            .iter()
            .map(|(endpoint, data)| {
                let ms = |q: f64| data.latency.value_at_quantile(q) as f64 / 1000.0;
                let requests = data.latency.len();
                let ok = data
                    .statuses
                    .iter()
                    .filter(|(s, _)| s.starts_with('2') || s.starts_with('3'))
                    .map(|(_, n)| n)
                    .sum();
                EndpointSummary {
                    endpoint: (*endpoint).to_owned(),
                    requests,
                    ok,
                    statuses: data.statuses.clone(),
                    throughput_per_sec: requests as f64 / elapsed.as_secs_f64().max(1e-9),
                    p50_ms: ms(0.50),
                    p90_ms: ms(0.90),
                    p99_ms: ms(0.99),
                    p999_ms: ms(0.999),
                    max_ms: data.latency.max() as f64 / 1000.0,
                    per_second: data.per_second.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_statuses_are_summarized_per_endpoint() {
        let recorder = Recorder::new();
        for i in 1..=100u64 {
            let status = if i <= 98 { Some(200) } else { Some(503) };
            recorder.record(
                Outcome {
                    endpoint: "GET /x",
                    status,
                },
                Duration::from_millis(i),
            );
        }
        recorder.record(
            Outcome {
                endpoint: "GET /y",
                status: None,
            },
            Duration::from_millis(5),
        );
        let summary = recorder.summarize(Duration::from_secs(10));
        let x = &summary[0];
        assert_eq!((x.requests, x.ok), (100, 98));
        assert_eq!(x.statuses["503"], 2);
        assert!((49.0..=51.0).contains(&x.p50_ms), "{}", x.p50_ms);
        assert!((98.0..=100.5).contains(&x.p99_ms), "{}", x.p99_ms);
        assert!((x.throughput_per_sec - 10.0).abs() < 1e-9);
        assert_eq!(summary[1].statuses["none"], 1);
    }

    #[test]
    fn absorbing_turns_pools_their_latencies_statuses_and_timelines() {
        let record = |recorder: &Recorder, endpoint, ms: std::ops::RangeInclusive<u64>| {
            for i in ms {
                let outcome = Outcome {
                    endpoint,
                    status: Some(201),
                };
                recorder.record(outcome, Duration::from_millis(i));
            }
        };
        let (pooled, fast, slow) = (Recorder::new(), Recorder::new(), Recorder::new());
        record(&fast, "POST /x", 1..=90);
        record(&slow, "POST /x", 1001..=1010);
        record(&slow, "GET /y", 1..=1);
        pooled.absorb(&fast);
        pooled.absorb(&slow);
        let summary = pooled.summarize(Duration::from_secs(2));
        let x = &summary[1];
        assert_eq!(
            (x.endpoint.as_str(), x.requests, x.statuses["201"]),
            ("POST /x", 100, 100)
        );
        // The slow turn's 10 requests are the pooled tail.
        assert!((1000.0..=1011.0).contains(&x.p99_ms), "{}", x.p99_ms);
        assert!((89.0..=91.0).contains(&x.p90_ms), "{}", x.p90_ms);
        assert_eq!(x.per_second, vec![90, 10]);
        assert_eq!(summary[0].requests, 1);
    }
}
