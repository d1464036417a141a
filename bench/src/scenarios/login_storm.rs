//! `login-storm`: what a flood of logins does, and what it costs everyone else.
//!
//! 1. Baseline: raw argon2id hashes per second with the node's exact parameters, on
//!    every core of this machine (and on one), in this process.
//! 2. `GET /v1/me` alone, open loop at `--rate` across the nodes: its p99.
//! 3. The same `/v1/me` load while `--connections` closed-loop clients log in as fast as
//!    they can across the nodes: its p99 again, and logins per second.
//!
//! Ratios: logins/s ÷ raw hashes/s (all cores), and me p99 during ÷ me p99 alone.
//! And what an active session costs Redis: the masters' `used_memory` before and after
//! the storm, divided by the sessions it added to the active-sessions set.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::json;

use crate::load::{closed_loop, open_loop};
use crate::recorder::Recorder;
use crate::report::{Phase, Ratio, Report};
use crate::scenarios::{client_ip, secs_since, send};
use crate::target::Target;

/// Knobs of the scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoginStorm {
    pub users: u64,
    pub me_rate: f64,
    pub duration: Duration,
    pub connections: usize,
    pub seed: u64,
}

use crate::scenarios::BENCH_PASSWORD as PASSWORD;

impl LoginStorm {
    /// Runs the scenario and returns its report.
    pub async fn run(&self, target: &Target, http: &Client) -> anyhow::Result<Report> {
        let mut report = Report::new(
            "login-storm",
            serde_json::to_value(self)?,
            serde_json::to_value(target)?,
        );
        let users = self.seed_users(target, http).await?;
        let me_token = self.login(target, http, &users[0], 0).await?;

        eprintln!(
            "baseline: raw argon2id hashing for {:?} ...",
            self.duration.min(Duration::from_secs(5))
        );
        let cores = report.cores;
        let all_cores = raw_hashes_per_sec(cores, self.duration.min(Duration::from_secs(5))).await;
        let one_core = raw_hashes_per_sec(1, self.duration.min(Duration::from_secs(5))).await;
        report.baselines.insert(
            "raw_argon2id_hashes_per_sec_all_cores".into(),
            json!(all_cores),
        );
        report.baselines.insert(
            "raw_argon2id_hashes_per_sec_one_core".into(),
            json!(one_core),
        );

        eprintln!(
            "phase: GET /v1/me alone at {} req/s for {:?} ...",
            self.me_rate, self.duration
        );
        let alone = self.me_phase(target, http, &me_token, None).await;
        eprintln!(
            "phase: GET /v1/me during a login storm of {} connections ...",
            self.connections
        );
        let before = RedisSessions::measure(&target.redis).await;
        let storm = self
            .me_phase(target, http, &me_token, Some(users.clone()))
            .await;
        let after = RedisSessions::measure(&target.redis).await;

        let p99 = |phase: &Phase, endpoint: &str| {
            phase
                .endpoints
                .iter()
                .find(|e| e.endpoint == endpoint)
                .map(|e| e.p99_ms)
                .unwrap_or(f64::NAN)
        };
        let logins_ok = storm
            .endpoints
            .iter()
            .find(|e| e.endpoint == "POST /v1/auth/login")
            .map(|e| e.ok as f64 / storm.duration_secs)
            .unwrap_or(0.0);
        report.ratios.push(Ratio {
            target: None,
            name: "logins per second ÷ raw argon2id hashes per second (all cores)".into(),
            value: logins_ok / all_cores,
            numerator: format!("{logins_ok:.1} logins/s"),
            denominator: format!("{all_cores:.1} hashes/s on {cores} cores"),
        });
        report.ratios.push(Ratio {
            target: None,
            name: "logins per second ÷ raw argon2id hashes per second (one core)".into(),
            value: logins_ok / one_core,
            numerator: format!("{logins_ok:.1} logins/s"),
            denominator: format!("{one_core:.1} hashes/s on 1 core"),
        });
        let (me_alone, me_storm) = (p99(&alone, "GET /v1/me"), p99(&storm, "GET /v1/me"));
        report.ratios.push(Ratio {
            target: None,
            name: "GET /v1/me p99 during the storm ÷ alone (must be ≤ 2)".into(),
            value: me_storm / me_alone,
            numerator: format!("{me_storm:.2} ms"),
            denominator: format!("{me_alone:.2} ms"),
        });
        match (before, after) {
            (Ok(before), Ok(after)) if after.sessions > before.sessions => {
                let added = after.sessions - before.sessions;
                let bytes = after.used_memory.saturating_sub(before.used_memory);
                report.baselines.insert(
                    "redis_bytes_per_active_session".into(),
                    json!(bytes as f64 / added as f64),
                );
                eprintln!(
                    "Redis: {added} sessions added, masters' memory +{bytes} bytes: {:.0} bytes a session",
                    bytes as f64 / added as f64
                );
            }
            (Err(e), _) | (_, Err(e)) => eprintln!("Redis memory not measured: {e}"),
            _ => eprintln!("Redis memory not measured: the storm added no session"),
        }
        report.phases = vec![alone, storm];
        Ok(report)
    }

    fn user_name(&self, i: u64) -> String {
        format!("bench_{}_{i}", self.seed)
    }

    /// Signs up the storm's users (a 409 means a previous run seeded them: reused).
    async fn seed_users(&self, target: &Target, http: &Client) -> anyhow::Result<Vec<String>> {
        eprintln!("seeding {} users ...", self.users);
        let names: Vec<String> = (0..self.users).map(|i| self.user_name(i)).collect();
        let chunks: Vec<Vec<(u64, String)>> = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (i as u64, n))
            .collect::<Vec<_>>()
            .chunks(8)
            .map(<[_]>::to_vec)
            .collect();
        for chunk in chunks {
            let signups = chunk.iter().map(|(i, name)| {
                let url = format!("{}/v1/auth/signup", target.nodes[*i as usize % target.nodes.len()]);
                let body = json!({"username": name, "email": format!("{name}@bench.example"), "password": PASSWORD});
                let ip = client_ip(self.seed, *i);
                async move { http.post(url).header("x-forwarded-for", ip).json(&body).send().await }
            });
            for response in futures::future::join_all(signups).await {
                let status = response?.status().as_u16();
                anyhow::ensure!(
                    status == 201 || status == 409,
                    "seeding a user answered {status}"
                );
            }
        }
        Ok(names)
    }

    async fn login(
        &self,
        target: &Target,
        http: &Client,
        name: &str,
        i: u64,
    ) -> anyhow::Result<String> {
        let response = http
            .post(format!("{}/v1/auth/login", target.nodes[0]))
            .header("x-forwarded-for", client_ip(self.seed, i))
            .json(&json!({"login": name, "password": PASSWORD}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "login of {name} answered {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await?;
        Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
    }

    /// `/v1/me` in an open loop, with a closed-loop login storm alongside when `storm`
    /// names the users to log in as.
    async fn me_phase(
        &self,
        target: &Target,
        http: &Client,
        token: &str,
        storm: Option<Vec<String>>,
    ) -> Phase {
        let recorder = Arc::new(Recorder::new());
        let start = Instant::now();
        let nodes = Arc::new(target.nodes.clone());
        let storm_task = storm.map(|users| {
            let (recorder, http, nodes) = (Arc::clone(&recorder), http.clone(), Arc::clone(&nodes));
            let users = Arc::new(users);
            let seed = self.seed;
            let next = Arc::new(AtomicU64::new(0));
            tokio::spawn(closed_loop(
                recorder,
                self.connections,
                self.duration,
                move |_| {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let user = users[(i % users.len() as u64) as usize].clone();
                    let url = format!("{}/v1/auth/login", nodes[(i % nodes.len() as u64) as usize]);
                    let ip = client_ip(seed, i % users.len() as u64);
                    let http = http.clone();
                    async move {
                        let body = json!({"login": user, "password": PASSWORD});
                        send(
                            &http,
                            "POST /v1/auth/login",
                            Method::POST,
                            url,
                            None,
                            Some(&ip),
                            Some(&body),
                        )
                        .await
                    }
                },
            ))
        });
        let token = Arc::new(token.to_owned());
        open_loop(Arc::clone(&recorder), self.me_rate, self.duration, |i| {
            let url = format!("{}/v1/me", nodes[(i % nodes.len() as u64) as usize]);
            let (http, token) = (http.clone(), Arc::clone(&token));
            async move {
                send(
                    &http,
                    "GET /v1/me",
                    Method::GET,
                    url,
                    Some(&token),
                    None,
                    None,
                )
                .await
            }
        })
        .await;
        let with_storm = storm_task.is_some();
        if let Some(task) = storm_task {
            let _ = task.await;
        }
        let duration = secs_since(start);
        Phase {
            name: if with_storm {
                "GET /v1/me during a login storm".into()
            } else {
                "GET /v1/me alone".into()
            },
            load: if with_storm {
                format!(
                    "open loop {} req/s + closed loop {} login connections",
                    self.me_rate, self.connections
                )
            } else {
                format!("open loop {} req/s", self.me_rate)
            },
            duration_secs: duration,
            endpoints: recorder.summarize(Duration::from_secs_f64(duration)),
        }
    }
}

/// Raw argon2id hashes per second on `threads` threads for `duration`.
pub async fn raw_hashes_per_sec(threads: usize, duration: Duration) -> f64 {
    use argon2::password_hash::PasswordHasher as _;
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + duration;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let done = Arc::clone(&done);
            tokio::task::spawn_blocking(move || {
                let argon2 = strata_node::auth::passwords::argon2();
                let mut n = 0u64;
                while Instant::now() < end {
                    let _ = argon2.hash_password(format!("bench password {t} {n}").as_bytes());
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    for w in workers {
        let _ = w.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// What the Redis Cluster holds for sessions at one moment.
struct RedisSessions {
    /// Sum of `used_memory` over the masters.
    used_memory: u64,
    /// Members of the active-sessions set (one per live session).
    sessions: u64,
}

impl RedisSessions {
    async fn measure(servers: &[String]) -> anyhow::Result<Self> {
        let mut used_memory = 0;
        for server in servers {
            let mut conn = redis::Client::open(server.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .arg("replication")
                .query_async(&mut conn)
                .await?;
            if info.lines().any(|l| l.trim() == "role:master") {
                used_memory += info_field(&info, "used_memory").unwrap_or(0);
            }
        }
        let mut cluster = redis::cluster::ClusterClient::new(servers.to_vec())?
            .get_async_connection()
            .await?;
        let sessions: u64 = redis::cmd("ZCARD")
            .arg(strata_node::auth::sessions::ACTIVE_SESSIONS_KEY)
            .query_async(&mut cluster)
            .await?;
        Ok(Self {
            used_memory,
            sessions,
        })
    }
}

/// A numeric `name:value` line of `INFO`.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.parse().ok())
}
