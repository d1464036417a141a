//! The shard-count part of `data-paths`: is routing cost flat in the number of shards?
//! For each shard count it starts a cluster of its own (that many primaries, no
//! replicas, one node, Redis without replicas), seeds the same users and posts, and
//! measures the read path (an owner reading their posts) and the write path
//! (`POST /v1/tasks`) at the maximum rate. Same data, same hardware, only the shard
//! count differs.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::json;
use strata_sandbox::Cluster;

use crate::load::closed_loop;
use crate::recorder::Recorder;
use crate::report::Phase;
use crate::scenarios::{client_ip, create_item, send, sign_in};

/// Knobs of the comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardScaling {
    pub shard_counts: Vec<usize>,
    pub users: usize,
    pub posts_per_user: usize,
    pub connections: usize,
    pub duration: Duration,
    pub seed: u64,
}

/// What one shard count measured.
#[derive(Debug, Clone)]
pub struct ScalingRun {
    pub shards: usize,
    pub read: Phase,
    pub write: Phase,
}

impl ShardScaling {
    /// Measures every shard count in turn, each on a fresh cluster removed afterwards.
    pub async fn run(&self, http: &Client) -> anyhow::Result<Vec<ScalingRun>> {
        let mut runs = Vec::new();
        for &shards in &self.shard_counts {
            eprintln!("shard scaling: starting a cluster of {shards} shards ...");
            let cluster = tokio::task::spawn_blocking(move || {
                Cluster::builder()
                    .shards(shards)
                    .replicas(0)
                    .nodes(1)
                    .load_balancer(false)
                    .redis_replicas(0)
                    .start()
            })
            .await??;
            let measured = self.measure(http, &cluster, shards).await;
            tokio::task::spawn_blocking(move || drop(cluster)).await?;
            runs.push(measured?);
        }
        Ok(runs)
    }

    async fn measure(
        &self,
        http: &Client,
        cluster: &Cluster,
        shards: usize,
    ) -> anyhow::Result<ScalingRun> {
        let node = cluster.nodes[0].url();
        let mut reads = Vec::new();
        let mut tokens = Vec::new();
        for u in 0..self.users {
            let ip = client_ip(self.seed, 800_000 + u as u64);
            let (token, _) =
                sign_in(http, &node, &format!("bench_shards_{}_{u}", self.seed), &ip).await?;
            for p in 0..self.posts_per_user {
                let body = json!({"title": format!("scaling post {p}"), "body": "lorem ipsum ".repeat(40)});
                let id = create_item(http, &node, &token, "/v1/posts", &body).await?;
                reads.push((format!("{node}/v1/posts/{id}"), token.clone()));
            }
            tokens.push(token);
        }
        // Every user's posts interleaved, so consecutive requests hit different shards.
        let reads = Arc::new(interleave(reads, self.posts_per_user));
        let tokens = Arc::new(tokens);

        eprintln!("shard scaling: {shards} shards, read path ...");
        let read = {
            let (http, reads) = (http.clone(), Arc::clone(&reads));
            self.closed(shards, "read", move |i: u64| {
                let (url, token) = reads[(i as usize) % reads.len()].clone();
                let http = http.clone();
                async move {
                    send(
                        &http,
                        "GET /v1/posts/{id}",
                        Method::GET,
                        url,
                        Some(&token),
                        None,
                        None,
                    )
                    .await
                }
            })
            .await
        };
        eprintln!("shard scaling: {shards} shards, write path ...");
        let write = {
            let (http, tokens, url) = (
                http.clone(),
                Arc::clone(&tokens),
                format!("{node}/v1/tasks"),
            );
            self.closed(shards, "write", move |i: u64| {
                let token = tokens[(i as usize) % tokens.len()].clone();
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let body = json!({"title": format!("scaling task {i}")});
                    send(
                        &http,
                        "POST /v1/tasks",
                        Method::POST,
                        url,
                        Some(&token),
                        None,
                        Some(&body),
                    )
                    .await
                }
            })
            .await
        };
        Ok(ScalingRun {
            shards,
            read,
            write,
        })
    }

    async fn closed<F, Fut>(&self, shards: usize, path: &str, make: F) -> Phase
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::recorder::Outcome> + Send + 'static,
    {
        let recorder = Arc::new(Recorder::new());
        closed_loop(Arc::clone(&recorder), self.connections, self.duration, make).await;
        Phase {
            name: format!("{path} max, {shards} shards"),
            load: format!(
                "closed loop, {} connections, one node, {shards} shards without replicas, {} users",
                self.connections, self.users
            ),
            duration_secs: self.duration.as_secs_f64(),
            endpoints: recorder.summarize(self.duration),
        }
    }
}

/// `items` (grouped `per_group` at a time) reordered round-robin across the groups.
fn interleave<T: Clone>(items: Vec<T>, per_group: usize) -> Vec<T> {
    let groups: Vec<&[T]> = items.chunks(per_group.max(1)).collect();
    (0..per_group)
        .flat_map(|i| groups.iter().filter_map(move |g| g.get(i).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::interleave;

    #[test]
    fn interleaving_takes_one_of_each_group_in_turn() {
        assert_eq!(
            interleave(vec![1, 2, 3, 4, 5, 6], 3),
            vec![1, 4, 2, 5, 3, 6]
        );
    }
}
