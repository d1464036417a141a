//! The two load models.
//!
//! **Open loop** (like wrk2 or k6's constant-arrival-rate): requests are due at a fixed
//! rate whatever the server does, and each one's latency is measured from when it was
//! *due*, not from when it was finally sent. A server that stalls for a second is charged
//! for every request that should have gone out during that second, so coordinated
//! omission cannot hide the stall.
//!
//! **Closed loop**: N connections, each sending its next request when the previous one
//! answers. Measures the throughput a fixed concurrency achieves (and hides stalls, which
//! is why latency targets use the open loop).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::recorder::{Outcome, Recorder};

/// How many open-loop requests may be outstanding before new ones wait (they still count
/// their wait in their latency).
const MAX_IN_FLIGHT: usize = 4096;

/// Sends `make(i)` at `rate` per second for `duration`, recording latency from each
/// request's due time. Returns when every request has finished.
pub async fn open_loop<F, Fut>(recorder: Arc<Recorder>, rate: f64, duration: Duration, make: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    assert!(rate > 0.0, "the rate must be positive");
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + duration;
    let mut tasks = Vec::new();
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let request = make(i);
        let permits = Arc::clone(&permits);
        let recorder = Arc::clone(&recorder);
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let outcome = request.await;
            recorder.record(outcome, due.elapsed());
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Runs `connections` loops, each sending `make(i)` back to back until `duration` is up.
pub async fn closed_loop<F, Fut>(
    recorder: Arc<Recorder>,
    connections: usize,
    duration: Duration,
    make: F,
) where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let make = Arc::new(make);
    let end = Instant::now() + duration;
    let workers = (0..connections).map(|worker| {
        let make = Arc::clone(&make);
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            let mut i = worker as u64;
            while Instant::now() < end {
                let sent = Instant::now();
                let outcome = make(i).await;
                recorder.record(outcome, sent.elapsed());
                i += connections as u64;
            }
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        let _ = worker.await;
    }
}
