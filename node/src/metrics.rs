//! Prometheus metrics: the recorder, the `/metrics` handler and the RED middleware that
//! counts every request by route template (never by raw path, which would explode the
//! label set), method and status, and times it. `http_requests_in_flight` is the signal
//! the autoscaler follows.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Latency buckets in seconds, from a cache hit to a slow cross-shard call.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder. Every `*_seconds` histogram gets the
/// latency buckets above.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .install_recorder()?;
    // Counters of rare events exist from the start at zero, so a dashboard panel or an
    // alert over them has a series (and a rate of 0) before the first event.
    for counter in [
        "strata_write_fence_retries_total",
        "strata_write_connection_retries_total",
        "strata_redis_retries_total",
        "strata_redis_unreplicated_revocations_total",
        "strata_search_rebuilds_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    Ok(handle)
}

/// `GET /metrics`: the Prometheus text format. Process figures (resident memory, CPU
/// seconds, open files) and the search index's document count and size on disk are
/// sampled at each scrape, so they are right from start-up and cost nothing between.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    metrics_process::Collector::default().collect();
    let search = state.search();
    metrics::gauge!("strata_search_documents").set(search.documents() as f64);
    metrics::gauge!("strata_search_index_bytes").set(search.size_on_disk() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
}

/// Rate, errors and duration of one request, by route: started before the request is
/// served, finished with its response (in [`crate::edge`]).
pub struct Red {
    route: String,
    method: &'static str,
    start: Instant,
}

impl Red {
    /// Counts the request in flight.
    pub fn start(request: &Request) -> Self {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        Self {
            route,
            method: method_name(request.method()),
            start: Instant::now(),
        }
    }

    /// Records the answer.
    pub fn finish(self, response: &Response) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
        let status = response.status().as_u16().to_string();
        metrics::counter!("http_requests_total", "method" => self.method, "route" => self.route.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "method" => self.method, "route" => self.route)
            .record(self.start.elapsed().as_secs_f64());
    }
}

/// The method as a static label (no allocation for the usual ones).
fn method_name(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
