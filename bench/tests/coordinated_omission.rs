//! The open loop charges a server stall to latency instead of hiding it (coordinated
//! omission), unlike a closed loop: against a server that freezes for one second, the
//! open loop's p99 shows the second, the closed loop's does not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use strata_bench::load::{closed_loop, open_loop};
use strata_bench::recorder::{Outcome, Recorder};

/// A server answering at once, except that for one second after `freeze` is called every
/// request waits for the second to end.
struct FreezingServer {
    url: String,
    frozen_until: Arc<Mutex<Option<Instant>>>,
}

impl FreezingServer {
    async fn start() -> Self {
        let frozen_until: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let state = Arc::clone(&frozen_until);
        let app = Router::new().route(
            "/",
            get(move || {
                let state = Arc::clone(&state);
                async move {
                    let until = *state.lock().unwrap();
                    if let Some(until) = until {
                        tokio::time::sleep_until(until.into()).await;
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, frozen_until }
    }

    /// After `after`, freezes the server for one second.
    fn freeze_later(&self, after: Duration) {
        let state = Arc::clone(&self.frozen_until);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            *state.lock().unwrap() = Some(Instant::now() + Duration::from_secs(1));
        });
    }
}

async fn get_once(http: reqwest::Client, url: String) -> Outcome {
    let status = http.get(url).send().await.ok().map(|r| r.status().as_u16());
    Outcome {
        endpoint: "GET /",
        status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_charges_a_one_second_stall_to_p99_and_the_closed_loop_hides_it() {
    let server = FreezingServer::start().await;
    let http = reqwest::Client::new();

    let open = Arc::new(Recorder::new());
    server.freeze_later(Duration::from_secs(1));
    let (client, url) = (http.clone(), server.url.clone());
    open_loop(
        Arc::clone(&open),
        100.0,
        Duration::from_secs(3),
        move |_| get_once(client.clone(), url.clone()),
    )
    .await;
    let open = &open.summarize(Duration::from_secs(3))[0];

    let closed = Arc::new(Recorder::new());
    server.freeze_later(Duration::from_secs(1));
    let (client, url) = (http.clone(), server.url.clone());
    closed_loop(Arc::clone(&closed), 1, Duration::from_secs(3), move |_| {
        get_once(client.clone(), url.clone())
    })
    .await;
    let closed = &closed.summarize(Duration::from_secs(3))[0];

    assert!(
        open.requests >= 290,
        "the open loop kept its schedule: {} requests",
        open.requests
    );
    assert!(
        open.p99_ms >= 800.0,
        "open-loop p99 {} ms should show the 1 s stall",
        open.p99_ms
    );
    assert!(
        open.p50_ms < 500.0,
        "most requests were not delayed: p50 {} ms",
        open.p50_ms
    );
    assert!(
        closed.max_ms >= 800.0,
        "the closed loop did meet the stall once: max {} ms",
        closed.max_ms
    );
    assert!(
        closed.p99_ms < 500.0,
        "closed-loop p99 {} ms hides the stall",
        closed.p99_ms
    );
}
