//! Request mixes over a seeded dataset: `read-heavy` (95 % post reads, 5 % writes),
//! `write-heavy`, `mixed` (every endpoint in realistic proportions), `search` (80 %
//! searches while posts are written and read), or any mix given as
//! `op=weight,...`. Which operation and which user each request gets is a pure function
//! of the seed and the request number, so runs are repeatable.

use std::sync::Arc;

use reqwest::{Client, Method};
use serde_json::json;

use crate::recorder::Outcome;
use crate::scenarios::{client_ip, send};

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    GetPost,
    ListPosts,
    CreatePost,
    UpdatePost,
    GetMe,
    CreateTask,
    UpdateTask,
    ListTasks,
    UploadFile,
    Search,
}

impl Op {
    const ALL: [(Op, &'static str); 10] = [
        (Op::GetPost, "get-post"),
        (Op::ListPosts, "list-posts"),
        (Op::CreatePost, "create-post"),
        (Op::UpdatePost, "update-post"),
        (Op::GetMe, "get-me"),
        (Op::CreateTask, "create-task"),
        (Op::UpdateTask, "update-task"),
        (Op::ListTasks, "list-tasks"),
        (Op::UploadFile, "upload-file"),
        (Op::Search, "search"),
    ];

    /// The endpoint it is reported under.
    pub fn endpoint(self) -> &'static str {
        match self {
            Op::GetPost => "GET /v1/posts/{id}",
            Op::ListPosts => "GET /v1/users/{id}/posts",
            Op::CreatePost => "POST /v1/posts",
            Op::UpdatePost => "PATCH /v1/posts/{id}",
            Op::GetMe => "GET /v1/me",
            Op::CreateTask => "POST /v1/tasks",
            Op::UpdateTask => "PATCH /v1/tasks/{id}",
            Op::ListTasks => "GET /v1/tasks",
            Op::UploadFile => "POST /v1/files",
            Op::Search => "GET /v1/search",
        }
    }

    /// True for requests that write.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Op::CreatePost | Op::UpdatePost | Op::CreateTask | Op::UpdateTask | Op::UploadFile
        )
    }
}

/// Why a mix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("unknown scenario or operation {0:?}; operations are {ops}", ops = Op::ALL.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", "))]
    UnknownOp(String),
    #[error("{0:?} is not op=weight with a whole-number weight")]
    BadEntry(String),
    #[error("a mix needs at least one operation with a positive weight")]
    Empty,
}

/// Weighted operations.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mix(pub Vec<(Op, u32)>);

impl Mix {
    /// A named preset or an `op=weight,...` list.
    pub fn parse(spec: &str) -> Result<Self, MixError> {
        match spec {
            "read-heavy" => return Ok(Self(vec![(Op::GetPost, 95), (Op::CreatePost, 5)])),
            "write-heavy" => {
                return Ok(Self(vec![
                    (Op::CreateTask, 50),
                    (Op::UpdateTask, 25),
                    (Op::CreatePost, 10),
                    (Op::GetPost, 15),
                ]));
            }
            "search" => {
                return Ok(Self(vec![
                    (Op::Search, 80),
                    (Op::CreatePost, 10),
                    (Op::GetPost, 10),
                ]));
            }
            "mixed" => {
                return Ok(Self(vec![
                    (Op::GetPost, 30),
                    (Op::GetMe, 15),
                    (Op::ListPosts, 10),
                    (Op::ListTasks, 10),
                    (Op::CreateTask, 10),
                    (Op::UpdateTask, 10),
                    (Op::CreatePost, 5),
                    (Op::UpdatePost, 5),
                    (Op::UploadFile, 5),
                ]));
            }
            _ => {}
        }
        let mut entries = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| {
                if Op::ALL.iter().any(|(_, n)| *n == part) {
                    MixError::BadEntry(part.into())
                } else {
                    MixError::UnknownOp(part.into())
                }
            })?;
            let op = Op::ALL
                .iter()
                .find(|(_, n)| *n == name.trim())
                .map(|(op, _)| *op)
                .ok_or_else(|| MixError::UnknownOp(name.into()))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| MixError::BadEntry(part.into()))?;
            if weight > 0 {
                entries.push((op, weight));
            }
        }
        if entries.is_empty() {
            return Err(MixError::Empty);
        }
        Ok(Self(entries))
    }

    /// The operation of request `i` (deterministic given the seed).
    pub fn pick(&self, seed: u64, i: u64) -> Op {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut roll = mix64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % total;
        for (op, weight) in &self.0 {
            if roll < u64::from(*weight) {
                return *op;
            }
            roll -= u64::from(*weight);
        }
        self.0[0].0
    }

    /// True when any operation writes.
    pub fn writes(&self) -> bool {
        self.0.iter().any(|(op, _)| op.writes())
    }
}

/// SplitMix64's finalizer: a cheap, well-spread hash of a counter.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One seeded user and the ids of its items.
#[derive(Debug, Clone)]
pub struct SeededUser {
    pub id: String,
    pub token: String,
    pub posts: Vec<String>,
    pub tasks: Vec<String>,
}

/// Every seeded user.
pub type Dataset = Arc<Vec<SeededUser>>;

/// Sends request `i` of the mix to one of `nodes`.
pub async fn request(
    http: Client,
    nodes: Arc<Vec<String>>,
    data: Dataset,
    mix: Arc<Mix>,
    seed: u64,
    i: u64,
) -> Outcome {
    let op = mix.pick(seed, i);
    let user = &data[(mix64(i ^ seed.rotate_left(17)) % data.len() as u64) as usize];
    let node = &nodes[(i % nodes.len() as u64) as usize];
    let nth = |items: &[String]| {
        items[(mix64(i) % items.len().max(1) as u64) as usize % items.len().max(1)].clone()
    };
    let token = Some(user.token.as_str());
    let ip = client_ip(seed, i % 1000);
    let endpoint = op.endpoint();
    match op {
        Op::GetPost if !user.posts.is_empty() => {
            send(
                &http,
                endpoint,
                Method::GET,
                format!("{node}/v1/posts/{}", nth(&user.posts)),
                token,
                Some(&ip),
                None,
            )
            .await
        }
        Op::UpdatePost if !user.posts.is_empty() => {
            let body = json!({"title": format!("edited {i}")});
            send(
                &http,
                endpoint,
                Method::PATCH,
                format!("{node}/v1/posts/{}", nth(&user.posts)),
                token,
                Some(&ip),
                Some(&body),
            )
            .await
        }
        Op::UpdateTask if !user.tasks.is_empty() => {
            let body = json!({"done": i.is_multiple_of(2)});
            send(
                &http,
                endpoint,
                Method::PATCH,
                format!("{node}/v1/tasks/{}", nth(&user.tasks)),
                token,
                Some(&ip),
                Some(&body),
            )
            .await
        }
        Op::ListPosts => {
            send(
                &http,
                endpoint,
                Method::GET,
                format!("{node}/v1/users/{}/posts?limit=20", user.id),
                token,
                Some(&ip),
                None,
            )
            .await
        }
        Op::ListTasks => {
            send(
                &http,
                endpoint,
                Method::GET,
                format!("{node}/v1/tasks?limit=20"),
                token,
                Some(&ip),
                None,
            )
            .await
        }
        Op::GetMe => {
            send(
                &http,
                endpoint,
                Method::GET,
                format!("{node}/v1/me"),
                token,
                Some(&ip),
                None,
            )
            .await
        }
        Op::CreateTask | Op::UpdateTask => {
            let body = json!({"title": format!("bench task {i}")});
            send(
                &http,
                Op::CreateTask.endpoint(),
                Method::POST,
                format!("{node}/v1/tasks"),
                token,
                Some(&ip),
                Some(&body),
            )
            .await
        }
        Op::Search => {
            // A term, a phrase, a prefix, a typo and a rarer word over the seeded posts.
            const QUERIES: [&str; 5] = ["lorem", "\"ipsum dolor\"", "lor", "ipsun", "bench 7"];
            let q = QUERIES[(mix64(i ^ 0x5EA2C4) % QUERIES.len() as u64) as usize];
            let url = reqwest::Url::parse_with_params(
                &format!("{node}/v1/search"),
                &[("q", q), ("limit", "20")],
            )
            .map(String::from)
            .unwrap_or_default();
            send(&http, endpoint, Method::GET, url, token, Some(&ip), None).await
        }
        Op::UploadFile => {
            let outcome = http
                .post(format!("{node}/v1/files?name=bench-{i}.txt"))
                .bearer_auth(&user.token)
                .header("content-type", "text/plain")
                .body(format!("bench file {i} ").repeat(256))
                .send()
                .await;
            Outcome {
                endpoint,
                status: outcome.ok().map(|r| r.status().as_u16()),
            }
        }
        Op::CreatePost | Op::GetPost | Op::UpdatePost => {
            let body = json!({"title": format!("bench post {i}"), "body": "lorem ipsum dolor ".repeat(30), "visibility": "public"});
            send(
                &http,
                Op::CreatePost.endpoint(),
                Method::POST,
                format!("{node}/v1/posts"),
                token,
                Some(&ip),
                Some(&body),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_custom_mixes_parse() {
        assert_eq!(Mix::parse("read-heavy").unwrap().0.len(), 2);
        assert_eq!(Mix::parse("search").unwrap().0[0], (Op::Search, 80));
        assert_eq!(
            Mix::parse("get-me=3, get-post=1").unwrap(),
            Mix(vec![(Op::GetMe, 3), (Op::GetPost, 1)])
        );
    }

    #[test]
    fn malformed_mixes_say_what_is_wrong() {
        assert!(matches!(
            Mix::parse("read-hevy"),
            Err(MixError::UnknownOp(_))
        ));
        assert!(matches!(
            Mix::parse("get-post=lots"),
            Err(MixError::BadEntry(_))
        ));
        assert!(matches!(Mix::parse("get-post"), Err(MixError::BadEntry(_))));
        assert_eq!(Mix::parse("get-post=0"), Err(MixError::Empty));
        assert!(
            MixError::UnknownOp("x".into())
                .to_string()
                .contains("get-post")
        );
    }

    #[test]
    fn picks_follow_the_weights_and_repeat_with_the_seed() {
        let mix = Mix::parse("read-heavy").unwrap();
        let reads = (0..10_000)
            .filter(|i| mix.pick(7, *i) == Op::GetPost)
            .count();
        assert!((9_300..=9_700).contains(&reads), "{reads} of 10000 reads");
        assert_eq!(
            (0..100).map(|i| mix.pick(7, i)).collect::<Vec<_>>(),
            (0..100).map(|i| mix.pick(7, i)).collect::<Vec<_>>()
        );
    }
}
