//! The Strata load-bench harness.
//!
//! - [`cpu_meter`] — the machine's and the load balancer's CPU time, per request.
//! - [`load`] — the open-loop (fixed arrival rate, latency from due time) and
//!   closed-loop (N connections) load models.
//! - [`pgbench`] — same-run baselines against the cluster's own Postgres hosts.
//! - [`monitoring_switch`] — pauses a local cluster's Prometheus and exporters, to
//!   measure what they cost.
//! - [`recorder`] — per-endpoint HdrHistograms and status counts.
//! - [`reference`] — the bare reference server `data-paths` compares the node with.
//! - [`chart`] — the report's SVG (latency percentiles, throughput over time).
//! - [`compare`] — the change between two reports, flagging regressions.
//! - [`report`] — JSON and Markdown reports with run metadata and same-run ratios.
//! - [`target`] — the cluster's nodes, from `cluster.json` or URLs.
//! - [`scenarios`] — the named scenarios.

pub mod chart;
pub mod compare;
pub mod corpus;
pub mod cpu_meter;
pub mod load;
pub mod monitoring_switch;
pub mod pgbench;
pub mod recorder;
pub mod reference;
pub mod report;
pub mod scenarios;
pub mod target;
