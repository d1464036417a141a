//! Steady load through both nodes while the cluster is rebalanced: posts created and
//! updated, tasks created, signups and logins, and every post read back through the
//! *other* node with the writer's consistency token. Every acknowledged write is
//! recorded (id and version), and every answer that is not a success is counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use strata_tests::api::{Api, status_and_json, unique};

/// A user of the workload.
#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub password: String,
    pub access: String,
}

/// An acknowledged post: its latest acknowledged version and title.
#[derive(Debug, Clone)]
pub struct AckedPost {
    pub owner: usize,
    pub version: i64,
    pub title: String,
    /// A word only this post's titles carry.
    pub word: String,
}

/// What the workload saw.
#[derive(Default)]
pub struct Ledger {
    pub accounts: Mutex<Vec<Account>>,
    pub posts: Mutex<BTreeMap<String, AckedPost>>,
    pub tasks: Mutex<Vec<(usize, String)>>,
    pub failures: Mutex<Vec<String>>,
    pub requests: AtomicU64,
}

impl Ledger {
    fn fail(&self, what: &str, status: reqwest::StatusCode, body: &Value) {
        self.failures
            .lock()
            .unwrap()
            .push(format!("{what}: {status} {body}"));
    }

    /// Failed requests so far.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// Signs up `n` accounts through `api`.
pub async fn sign_up(api: &Api, ledger: &Ledger, n: usize) {
    for _ in 0..n {
        let account = new_account(api, ledger)
            .await
            .unwrap_or_else(|| panic!("set-up signup: {:?}", ledger.failures()));
        ledger.accounts.lock().unwrap().push(account);
    }
}

async fn new_account(api: &Api, ledger: &Ledger) -> Option<Account> {
    let username = unique("mv");
    let password = format!("moving-day-{}", username.len() * 7919);
    ledger.requests.fetch_add(1, Ordering::Relaxed);
    let (status, body) = status_and_json(
        api.signup(&username, &format!("{username}@example.com"), &password)
            .await,
    )
    .await;
    if status != 201 {
        ledger.fail("signup", status, &body);
        return None;
    }
    Some(Account {
        username,
        password,
        access: body["access_token"].as_str()?.to_owned(),
    })
}

/// Runs one worker until `stop`: writes through `nodes[w % 2]`, reads back through the
/// other node.
pub async fn worker(w: usize, nodes: [Api; 2], ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let (writer, reader) = if (w + round).is_multiple_of(2) {
            (&nodes[0], &nodes[1])
        } else {
            (&nodes[1], &nodes[0])
        };
        let owner = {
            let accounts = ledger.accounts.lock().unwrap();
            (w * 7 + round) % accounts.len()
        };
        let account = ledger.accounts.lock().unwrap()[owner].clone();
        let word = format!("zq{}x{}", w, unique("p").replace('_', "y"));
        // Create a post, then read it back through the other node with the token.
        let title = format!("{word} first");
        ledger.requests.fetch_add(2, Ordering::Relaxed);
        let response = writer
            .post(
                "/v1/posts",
                &json!({"title": title, "body": "moving day", "visibility": "public"}),
                Some(&account.access),
            )
            .await;
        let token = consistency(&response);
        let (status, body) = status_and_json(response).await;
        if status != 201 {
            ledger.fail("create post", status, &body);
            continue;
        }
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        ledger.posts.lock().unwrap().insert(
            id.clone(),
            AckedPost {
                owner,
                version: 1,
                title: title.clone(),
                word: word.clone(),
            },
        );
        read_back(reader, &ledger, &account, &id, 1, token.as_deref()).await;
        // Update it: a second version, read back the same way.
        let title = format!("{word} second");
        ledger.requests.fetch_add(2, Ordering::Relaxed);
        let response = patch(
            writer,
            &format!("/v1/posts/{id}"),
            &json!({"title": title}),
            &account.access,
        )
        .await;
        let token = consistency(&response);
        let (status, body) = status_and_json(response).await;
        if status != 200 {
            ledger.fail("update post", status, &body);
        } else {
            let version = body["version"].as_i64().unwrap_or(0);
            if let Some(post) = ledger.posts.lock().unwrap().get_mut(&id) {
                post.version = version;
                post.title = title;
            }
            read_back(reader, &ledger, &account, &id, version, token.as_deref()).await;
        }
        // A task.
        ledger.requests.fetch_add(1, Ordering::Relaxed);
        let (status, body) = status_and_json(
            writer
                .post("/v1/tasks", &json!({"title": word}), Some(&account.access))
                .await,
        )
        .await;
        if status == 201 {
            let task = body["id"].as_str().unwrap_or_default().to_owned();
            ledger.tasks.lock().unwrap().push((owner, task));
        } else {
            ledger.fail("create task", status, &body);
        }
        // Now and then a signup and a login.
        if round.is_multiple_of(5) {
            if let Some(account) = new_account(writer, &ledger).await {
                ledger.accounts.lock().unwrap().push(account);
            }
            ledger.requests.fetch_add(1, Ordering::Relaxed);
            let (status, body) =
                status_and_json(reader.login(&account.username, &account.password).await).await;
            if status != 200 {
                ledger.fail("login", status, &body);
            }
        }
    }
}

async fn read_back(
    api: &Api,
    ledger: &Ledger,
    account: &Account,
    id: &str,
    version: i64,
    token: Option<&str>,
) {
    let mut request = api
        .http
        .get(format!("{}/v1/posts/{id}", api.base))
        .bearer_auth(&account.access);
    if let Some(token) = token {
        request = request.header("x-strata-consistency", token);
    }
    let (status, body) = status_and_json(request.send().await.expect("request sent")).await;
    if status != 200 {
        ledger.fail("read back", status, &body);
    } else if body["version"].as_i64().unwrap_or(0) < version {
        ledger.fail("read back (stale)", status, &body);
    }
}

async fn patch(api: &Api, path: &str, body: &Value, token: &str) -> reqwest::Response {
    api.http
        .patch(format!("{}{path}", api.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

fn consistency(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-strata-consistency")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
