//! Steady load for the fault tests: one worker per user, each in a loop reading its
//! profile (a session check in Redis) and its task list (a replica read), and creating a
//! task (a write on its shard's primary). Every answer is counted by status, and every
//! acknowledged task is recorded so a test can read each one back afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use strata_tests::api::{Api, Tokens, status_and_json};

/// What the load saw.
#[derive(Default)]
pub struct Tally {
    /// Answers by status (0: no answer at all).
    pub statuses: Mutex<BTreeMap<u16, u64>>,
    /// Acknowledged tasks: the owner's index and the task id.
    pub acked: Mutex<Vec<(usize, String)>>,
    /// The first few failures, for the assertion message.
    pub samples: Mutex<Vec<String>>,
}

impl Tally {
    fn count(&self, what: &str, status: u16, body: &str) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
        if !(200..300).contains(&status) {
            let mut samples = self.samples.lock().unwrap();
            if samples.len() < 10 {
                samples.push(format!("{what}: {status} {body}"));
            }
        }
    }

    /// Requests answered, and those that failed (no answer or not 2xx).
    pub fn totals(&self) -> (u64, u64) {
        let statuses = self.statuses.lock().unwrap();
        let sent = statuses.values().sum();
        let failed = statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        (sent, failed)
    }

    /// A summary for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "statuses {:?}, first failures {:?}",
            self.statuses.lock().unwrap(),
            self.samples.lock().unwrap()
        )
    }
}

/// Load running in the background until [`Running::stop`].
pub struct Running {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    pub tally: Arc<Tally>,
}

impl Running {
    /// Starts one worker per user against `api`.
    pub fn start(api: &Api, users: &[Tokens]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let workers = users
            .iter()
            .enumerate()
            .map(|(index, user)| {
                let (api, access) = (api.clone(), user.access.clone());
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                tokio::spawn(async move { worker(index, api, access, stop, tally).await })
            })
            .collect();
        Self {
            stop,
            workers,
            tally,
        }
    }

    /// Stops the workers and waits for their last requests.
    pub async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            // A worker stops (panics) on a request that got no answer at all.
            if let Err(e) = worker.await {
                self.tally.count("a worker's request", 0, &e.to_string());
            }
        }
        self.tally
    }
}

async fn worker(index: usize, api: Api, access: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let me = api.get("/v1/me", Some(&access)).await;
        let status = me.status().as_u16();
        tally.count("GET /v1/me", status, &me.text().await.unwrap_or_default());
        let list = api.get("/v1/tasks?limit=5", Some(&access)).await;
        let status = list.status().as_u16();
        tally.count(
            "GET /v1/tasks",
            status,
            &list.text().await.unwrap_or_default(),
        );
        let created = api
            .post(
                "/v1/tasks",
                &json!({"title": format!("steady {index}-{n}")}),
                Some(&access),
            )
            .await;
        let (status, body) = status_and_json(created).await;
        tally.count("POST /v1/tasks", status.as_u16(), &body.to_string());
        if let (201, Some(id)) = (status.as_u16(), body["id"].as_str()) {
            tally.acked.lock().unwrap().push((index, id.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
