//! Prometheus metrics: the recorder, the `/metrics` handler and the RED middleware that
//! counts every request by route template (never by raw path, which would explode the
//! label set), method and status, and times it. `http_requests_in_flight` is the signal
//! the autoscaler follows.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Histogram};
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

/// The RED metrics' handles, kept by route, method and status. A registry lookup
/// builds, allocates and hashes a labelled key each time; every request made four of
/// them, which cost a cached read more than its JSON. Here a request looks up its
/// route's handles under a read lock, and only the first request of a route, method
/// and status goes to the registry.
pub struct RedMetrics {
    in_flight: Gauge,
    routes: RwLock<HashMap<Box<str>, RouteMetrics>>,
}

/// The handles of one route: a duration histogram per method, an answer counter per
/// method and status. A route sees few of either, so a list is the fastest map.
#[derive(Default)]
struct RouteMetrics {
    durations: Vec<(&'static str, Histogram)>,
    answers: Vec<(&'static str, u16, Counter)>,
}

impl RouteMetrics {
    fn handles(&self, method: &'static str, status: u16) -> Option<(&Histogram, &Counter)> {
        let duration = self.durations.iter().find(|(m, _)| *m == method)?;
        let answers = self
            .answers
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)?;
        Some((&duration.1, &answers.2))
    }
}

impl RedMetrics {
    /// Handles of the process-wide recorder (install it first, or they record nothing).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: metrics::gauge!("http_requests_in_flight"),
            routes: RwLock::default(),
        })
    }

    /// Records one answer of `route`.
    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some((duration, answers)) =
                routes.get(route).and_then(|r| r.handles(method, status))
            {
                duration.record(seconds);
                answers.increment(1);
                return;
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let handles = routes.entry(route.into()).or_default();
        if !handles.durations.iter().any(|(m, _)| *m == method) {
            let histogram = metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.to_owned());
            handles.durations.push((method, histogram));
        }
        if !handles
            .answers
            .iter()
            .any(|(m, s, _)| *m == method && *s == status)
        {
            let counter = metrics::counter!("http_requests_total", "method" => method, "route" => route.to_owned(), "status" => status.to_string());
            handles.answers.push((method, status, counter));
        }
        let (duration, answers) = handles
            .handles(method, status)
            .expect("both handles were just added");
        duration.record(seconds);
        answers.increment(1);
    }
}

/// Rate, errors and duration of one request, by route: started before the request is
/// served, finished with its response (in [`crate::edge`]). It leaves the in-flight
/// gauge when dropped, so a request whose client went away is not in flight forever.
pub struct Red {
    metrics: Arc<RedMetrics>,
    route: Option<MatchedPath>,
    method: &'static str,
    start: Instant,
}

impl Red {
    /// Counts the request in flight.
    pub fn start(metrics: &Arc<RedMetrics>, request: &Request) -> Self {
        metrics.in_flight.increment(1.0);
        Self {
            metrics: Arc::clone(metrics),
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: method_name(request.method()),
            start: Instant::now(),
        }
    }

    /// Records the answer.
    pub fn finish(self, response: &Response) {
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        self.metrics.record(
            route,
            self.method,
            response.status().as_u16(),
            self.start.elapsed().as_secs_f64(),
        );
    }
}

impl Drop for Red {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;

    #[test]
    fn answers_are_counted_by_route_method_and_status_and_leave_the_in_flight_gauge() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let red = RedMetrics::new();
            red.record("/v1/posts/{id}", "GET", 200, 0.001);
            red.record("/v1/posts/{id}", "GET", 200, 0.002);
            red.record("/v1/posts/{id}", "GET", 404, 0.001);
            red.record("/v1/posts/{id}", "DELETE", 204, 0.001);
            let request = || {
                Request::builder()
                    .method("POST")
                    .uri("/nowhere")
                    .body(Body::empty())
                    .unwrap()
            };
            let answered = Red::start(&red, &request());
            let abandoned = Red::start(&red, &request());
            answered.finish(&StatusCode::NOT_FOUND.into_response());
            // A client that goes away drops its request unanswered.
            drop(abandoned);
        });
        let text = handle.render();
        for line in [
            r#"http_requests_total{method="GET",route="/v1/posts/{id}",status="200"} 2"#,
            r#"http_requests_total{method="GET",route="/v1/posts/{id}",status="404"} 1"#,
            r#"http_requests_total{method="DELETE",route="/v1/posts/{id}",status="204"} 1"#,
            r#"http_requests_total{method="POST",route="unmatched",status="404"} 1"#,
            r#"http_request_duration_seconds_count{method="GET",route="/v1/posts/{id}"} 3"#,
            r#"http_request_duration_seconds_count{method="POST",route="unmatched"} 1"#,
            "http_requests_in_flight 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
