//! Accounts, tokens and sessions end to end, on a real cluster with two nodes (and
//! HAProxy), two shards with replicas, and Redis Cluster. Every test works on users of
//! its own. The per-name login limit is lowered to 5 so the shared-budget test is short;
//! the per-IP limits are raised since every test client is 127.0.0.1.

mod forged;
mod hostile;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_node::accounts::names::{Email, LoginName, Username};
use strata_node::accounts::store::AccountStore;
use strata_node::auth::ids::UserId;
use strata_node::auth::passwords::PasswordHasher;
use strata_node::config::{AuthConfig, LimitsConfig};
use strata_router::RouterSettings;
use strata_sandbox::Cluster;
use strata_tests::api::{Api, Tokens, status_and_json, unique};
use strata_tests::{SharedCluster, eventually, router};

static CLUSTER: SharedCluster = SharedCluster::new();

/// How long a just-spent refresh token stays usable in this cluster.
const REFRESH_GRACE: Duration = Duration::from_millis(300);

const PASSWORD: &str = "correct horse battery staple";

fn cluster() -> &'static Cluster {
    CLUSTER.get(|| {
        let builder = Cluster::builder();
        let auth = AuthConfig {
            refresh_grace_ms: REFRESH_GRACE.as_millis() as u64,
            ..builder.auth_settings()
        };
        let limits = LimitsConfig {
            login_per_name: 5,
            login_per_ip: 100_000,
            signup_per_ip: 100_000,
            refresh_per_ip: 100_000,
            ..LimitsConfig::default()
        };
        builder.auth(auth).limits(limits)
    })
}

fn node(i: usize) -> Api {
    Api::new(cluster().nodes[i].url())
}

fn load_balancer() -> Api {
    Api::new(
        cluster()
            .load_balancer
            .as_ref()
            .expect("a load balancer")
            .url(),
    )
}

/// Runs SQL on every shard primary and returns each answer.
fn on_every_primary(sql: &str) -> Vec<String> {
    let cluster = cluster();
    cluster
        .spec
        .shard_map
        .shards
        .iter()
        .map(|s| cluster.pg(&s.id, 0).psql("strata", sql).unwrap())
        .collect()
}

fn count_everywhere(sql: &str) -> u64 {
    on_every_primary(sql)
        .iter()
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn a_user_signed_up_on_one_node_logs_in_on_the_other_and_logout_ends_it_everywhere() {
    let name = unique("roamer");
    let signed_up = node(0).signup_ok(&name, PASSWORD).await;
    let (status, body) = status_and_json(node(1).login(&name, PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_b = Tokens::from_body(&body);
    assert_eq!(on_b.user_id, signed_up.user_id);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["username"], name);

    assert_eq!(node(0).me_status(&on_b.access).await, StatusCode::OK);
    let logout = node(0)
        .post("/v1/auth/logout", &json!({}), Some(&on_b.access))
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        node(1).me_status(&on_b.access).await,
        StatusCode::UNAUTHORIZED,
        "dead on the other node at once"
    );
    assert_eq!(
        node(1).me_status(&signed_up.access).await,
        StatusCode::OK,
        "the signup session lives on"
    );
}

/// Node 1 serves each session twice just before node 0 revokes it: every kind of
/// revocation is refused by node 1 on the very next request, round after round (the
/// guarantee any cache of session checks must keep).
#[tokio::test]
async fn a_session_another_node_served_a_moment_ago_is_refused_there_at_once_after_it_ends() {
    const ROUNDS: usize = 8;
    let hits_before = session_cache_hits(1).await;
    for round in 0..ROUNDS {
        let name = unique("cached");
        let first = node(0).signup_ok(&name, PASSWORD).await;
        let mut sessions = vec![first];
        for _ in 0..2 {
            let (status, body) = status_and_json(node(0).login(&name, PASSWORD).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            sessions.push(Tokens::from_body(&body));
        }
        let serve_on_b = |tokens: &[&Tokens]| {
            let access: Vec<String> = tokens.iter().map(|t| t.access.clone()).collect();
            async move {
                for access in access {
                    for _ in 0..2 {
                        assert_eq!(node(1).me_status(&access).await, StatusCode::OK);
                    }
                }
            }
        };
        let [logged_out, changed_away, changer] = &sessions[..] else {
            unreachable!()
        };
        serve_on_b(&[logged_out, changed_away, changer]).await;

        let response = node(0)
            .post("/v1/auth/logout", &json!({}), Some(&logged_out.access))
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            node(1).me_status(&logged_out.access).await,
            StatusCode::UNAUTHORIZED,
            "round {round}: logout"
        );

        let new_password = format!("another passphrase {round}");
        let change = json!({"current_password": PASSWORD, "new_password": new_password});
        let response = node(0)
            .put("/v1/me/password", &change, Some(&changer.access))
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            node(1).me_status(&changed_away.access).await,
            StatusCode::UNAUTHORIZED,
            "round {round}: password change"
        );

        serve_on_b(&[changer]).await;
        let response = node(0)
            .post("/v1/auth/logout-all", &json!({}), Some(&changer.access))
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            node(1).me_status(&changer.access).await,
            StatusCode::UNAUTHORIZED,
            "round {round}: logout-all"
        );
    }

    // A spent refresh token presented again revokes its session on every node at once.
    let name = unique("cached");
    let first = node(0).signup_ok(&name, PASSWORD).await;
    let (_, body) = status_and_json(node(0).refresh(&first.refresh).await).await;
    let rotated = Tokens::from_body(&body);
    tokio::time::sleep(REFRESH_GRACE * 2).await;
    assert_eq!(node(1).me_status(&rotated.access).await, StatusCode::OK);
    assert_eq!(node(1).me_status(&rotated.access).await, StatusCode::OK);
    assert_eq!(
        node(0).refresh(&first.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        node(1).me_status(&rotated.access).await,
        StatusCode::UNAUTHORIZED,
        "reuse"
    );
    // The sessions node 1 refused were answered from its memory a moment before: the
    // test is about a cache that was really used.
    let hits = session_cache_hits(1).await - hits_before;
    assert!(
        hits >= ROUNDS as u64,
        "node 1 answered {hits} session checks from its cache"
    );
}

/// How many session checks node `i` answered from its own cache so far.
async fn session_cache_hits(i: usize) -> u64 {
    let text = node(i).get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("strata_cache_requests_total{")
                && l.contains("cache=\"session\"")
                && l.contains("result=\"hit\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn concurrent_signups_of_one_username_across_nodes_create_exactly_one_user() {
    let name = unique("contested");
    let attempts = (0..20).map(|i| {
        let api = node(i % 2);
        let name = name.clone();
        async move {
            api.signup(&name, &format!("{name}.{i}@example.com"), PASSWORD)
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 19), "{statuses:?}");
    assert_eq!(
        count_everywhere(&format!(
            "SELECT count(*) FROM users WHERE username = '{name}'"
        )),
        1
    );
    let confirmed = count_everywhere(&format!(
        "SELECT count(*) FROM login_names WHERE name = 'username:{name}' AND state = 'confirmed'"
    ));
    assert_eq!(confirmed, 1);
}

/// Stands in for a node that crashes mid-signup: drives the signup steps directly.
async fn crashed_signup(username: &str, steps: &str) -> UserId {
    let (topology, _poller) = router(cluster(), RouterSettings::default()).await;
    let store = AccountStore::new(&topology);
    let user = UserId::generate();
    let (name, email) = (
        Username::parse(username).unwrap(),
        Email::parse(&format!("{username}@example.com")).unwrap(),
    );
    let ttl = Duration::from_millis(200);
    store
        .claim(&LoginName::of_username(&name), &user, ttl)
        .await
        .unwrap();
    store
        .claim(&LoginName::of_email(&email), &user, ttl)
        .await
        .unwrap();
    if steps == "claim+create" {
        let hash = PasswordHasher::start(1, 1)
            .hash(PASSWORD.into())
            .await
            .unwrap();
        assert!(
            store
                .create_user(&user, &name, &email, &hash)
                .await
                .unwrap()
        );
    }
    user
}

#[tokio::test]
async fn a_crash_after_claiming_a_name_leaves_it_reclaimable_and_no_orphans() {
    let name = unique("phoenix");
    let crashed = crashed_signup(&name, "claim").await;
    let (status, body) = eventually(
        "the abandoned name to be reclaimed",
        Duration::from_secs(20),
        || async {
            let response = node(1)
                .signup(&name, &format!("{name}@example.com"), PASSWORD)
                .await;
            match status_and_json(response).await {
                (StatusCode::CREATED, body) => Ok((StatusCode::CREATED, body)),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let winner = body["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        count_everywhere(&format!(
            "SELECT count(*) FROM users WHERE id = '{crashed}'"
        )),
        0,
        "no orphan user"
    );
    assert_eq!(
        count_everywhere(&format!(
            "SELECT count(*) FROM users WHERE username = '{name}'"
        )),
        1
    );
    let holders = on_every_primary(&format!(
        "SELECT string_agg(user_id || ':' || state, ',') FROM login_names WHERE name IN ('username:{name}', 'email:{name}@example.com')"
    ));
    let holders: Vec<&str> = holders
        .iter()
        .flat_map(|h| h.split(','))
        .filter(|h| !h.is_empty())
        .collect();
    assert_eq!(
        holders,
        vec![format!("{winner}:confirmed"); 2],
        "both names belong to the new user"
    );
    let outcome = on_every_primary(&format!(
        "SELECT outcome FROM signup_outcomes WHERE user_id = '{crashed}'"
    ))
    .concat();
    assert_eq!(outcome, "abandoned");
}

#[tokio::test]
async fn a_crash_after_creating_the_user_keeps_the_name_with_that_user() {
    let name = unique("survivor");
    let crashed = crashed_signup(&name, "claim+create").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the claims expire
    let response = node(0)
        .signup(&name, &format!("{name}.other@example.com"), PASSWORD)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CONFLICT,
        "the name belongs to the user that was created"
    );
    let (topology, _poller) = router(cluster(), RouterSettings::default()).await;
    AccountStore::new(&topology)
        .settle_expired_claims()
        .await
        .unwrap();
    let left = count_everywhere(&format!(
        "SELECT count(*) FROM login_names WHERE user_id = '{crashed}' AND state = 'confirmed'"
    ));
    assert_eq!(
        left, 2,
        "username and email both confirmed for the surviving user"
    );
    let (status, body) = status_and_json(
        node(1)
            .login(&format!("{name}@example.com"), PASSWORD)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], crashed.to_string());
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_spent_token_revokes_the_session() {
    let name = unique("rotator");
    let first = node(0).signup_ok(&name, PASSWORD).await;
    let (status, body) = status_and_json(node(1).refresh(&first.refresh).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = Tokens::from_body(&body);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(node(0).me_status(&second.access).await, StatusCode::OK);

    // A client that lost the answer may retry within the grace period.
    let (status, body) = status_and_json(node(0).refresh(&first.refresh).await).await;
    assert_eq!(status, StatusCode::OK, "retry within the grace: {body}");
    let third = Tokens::from_body(&body);

    tokio::time::sleep(REFRESH_GRACE * 2).await;
    assert_eq!(
        node(1).refresh(&first.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "replay after the grace"
    );
    assert_eq!(
        node(0).me_status(&third.access).await,
        StatusCode::UNAUTHORIZED,
        "the whole family is revoked"
    );
    assert_eq!(
        node(0).refresh(&third.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_attempts_on_both_nodes_share_one_rate_limit() {
    let name = unique("hammered");
    node(0).signup_ok(&name, PASSWORD).await;
    for attempt in 0..5 {
        let response = node(attempt % 2).login(&name, "wrong password!").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let response = node(1).login(&name, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (_, problem) = status_and_json(response).await;
    assert_eq!(problem["type"], "urn:strata:problem:rate-limited");
}

/// Two refreshes with one token within the grace (a client retry, a second tab), each
/// answered 200: the session keeps working whichever of the two answers the client kept.
#[tokio::test]
async fn a_refresh_retried_within_the_grace_leaves_a_working_session_whichever_answer_is_kept() {
    for keep in [0usize, 1] {
        let name = unique("twotabs");
        let start = node(0).signup_ok(&name, PASSWORD).await;
        let (status_a, body_a) = status_and_json(node(0).refresh(&start.refresh).await).await;
        let (status_b, body_b) = status_and_json(node(1).refresh(&start.refresh).await).await;
        assert_eq!(
            (status_a, status_b),
            (StatusCode::OK, StatusCode::OK),
            "{body_a} {body_b}"
        );
        let kept = Tokens::from_body(if keep == 0 { &body_a } else { &body_b });
        let (status, body) = status_and_json(node(keep).refresh(&kept.refresh).await).await;
        assert_eq!(status, StatusCode::OK, "answer {keep} kept: {body}");
        let next = Tokens::from_body(&body);
        assert_eq!(node(0).me_status(&next.access).await, StatusCode::OK);
    }
}

/// Logs in as if from `ip` (the nodes trust loopback as their proxy).
async fn login_from(ip: &str, login: &str, password: &str) -> StatusCode {
    node(0)
        .http
        .post(format!("{}/v1/auth/login", node(0).base))
        .header("x-forwarded-for", ip)
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Wrong passwords from one address use up that address's tries at that account, not
/// the account's: its owner, elsewhere, still logs in.
#[tokio::test]
async fn strangers_guessing_a_password_cannot_lock_its_owner_out() {
    let name = unique("besieged");
    node(0).signup_ok(&name, PASSWORD).await;
    for attempt in 0..5 {
        assert_eq!(
            login_from("198.51.100.7", &name, "wrong password!").await,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    assert_eq!(
        login_from("198.51.100.7", &name, "wrong password!").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the guessing address is throttled"
    );
    assert_eq!(
        login_from("203.0.113.9", &name, PASSWORD).await,
        StatusCode::OK,
        "the owner, from another address, still logs in"
    );
}

/// A stolen access token cannot guess the current password without end.
#[tokio::test]
async fn wrong_current_passwords_are_rate_limited() {
    let name = unique("guarded");
    let tokens = node(0).signup_ok(&name, PASSWORD).await;
    let change =
        json!({"current_password": "not it at all", "new_password": "a brand new passphrase"});
    for attempt in 0..5 {
        let response = node(attempt % 2)
            .put("/v1/me/password", &change, Some(&tokens.access))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "attempt {attempt}"
        );
    }
    let response = node(1)
        .put("/v1/me/password", &change, Some(&tokens.access))
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let name = unique("known");
    node(0).signup_ok(&name, PASSWORD).await;
    let (status_wrong, wrong) =
        status_and_json(node(0).login(&name, "not the password").await).await;
    let (status_unknown, unknown) =
        status_and_json(node(1).login(&unique("nobody"), "not the password").await).await;
    assert_eq!(
        (status_wrong, status_unknown),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        (&wrong["type"], &wrong["detail"]),
        (&unknown["type"], &unknown["detail"])
    );
    assert_eq!(wrong["detail"], "invalid credentials");
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_logout_all_ends_all() {
    let name = unique("changer");
    let here = node(0).signup_ok(&name, PASSWORD).await;
    let (_, body) = status_and_json(node(1).login(&name, PASSWORD).await).await;
    let elsewhere = Tokens::from_body(&body);

    let change = json!({"current_password": "wrong one", "new_password": "a brand new passphrase"});
    let response = node(0)
        .put("/v1/me/password", &change, Some(&here.access))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the current password must be right"
    );

    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let response = node(0)
        .put("/v1/me/password", &change, Some(&here.access))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        node(1).me_status(&elsewhere.access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        node(1).me_status(&here.access).await,
        StatusCode::OK,
        "the session that changed it stays"
    );
    assert_eq!(
        node(1).login(&name, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, body) =
        status_and_json(node(1).login(&name, "a brand new passphrase").await).await;
    assert_eq!(status, StatusCode::OK);
    let newest = Tokens::from_body(&body);

    let response = node(1)
        .post("/v1/auth/logout-all", &json!({}), Some(&newest.access))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        node(0).me_status(&here.access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        node(0).me_status(&newest.access).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sessions_are_listed_and_one_can_be_ended_by_id() {
    let name = unique("lister");
    let first = node(0).signup_ok(&name, PASSWORD).await;
    let (_, body) = status_and_json(node(1).login(&name, PASSWORD).await).await;
    let second = Tokens::from_body(&body);
    let (status, list) =
        status_and_json(node(0).get("/v1/me/sessions", Some(&first.access)).await).await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    let other = items.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let url = format!("{}/v1/me/sessions/{other}", node(0).base);
    let response = node(0)
        .http
        .delete(&url)
        .bearer_auth(&first.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        node(1).me_status(&second.access).await,
        StatusCode::UNAUTHORIZED
    );
    let response = node(0)
        .http
        .delete(&url)
        .bearer_auth(&first.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "already gone");
    let bogus = format!("{}/v1/me/sessions/..%2F..%2Fetc%2Fpasswd", node(0).base);
    assert_eq!(
        node(0)
            .http
            .delete(&bogus)
            .bearer_auth(&first.access)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn browser_mode_uses_cookies_and_unsafe_requests_need_the_csrf_header() {
    let name = unique("browser");
    let api = load_balancer();
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD, "cookie": true});
    let response = api.post("/v1/auth/signup", &body, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(set_cookies.len(), 3, "{set_cookies:?}");
    for cookie in &set_cookies {
        assert!(
            cookie.contains("Secure") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
    }
    let cookie_header: String = set_cookies
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ");
    let (_, body) = status_and_json(response).await;
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();

    let me = api
        .http
        .get(format!("{}/v1/me", api.base))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "a safe request needs only the cookie"
    );
    let logout = format!("{}/v1/auth/logout", api.base);
    let refused = api
        .http
        .post(&logout)
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "an unsafe cookie request needs the CSRF header"
    );
    let wrong = api
        .http
        .post(&logout)
        .header("cookie", &cookie_header)
        .header("x-csrf-token", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let ok = api
        .http
        .post(&logout)
        .header("cookie", &cookie_header)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
}

/// Runs `strata user <command> <name>` against this cluster; it must succeed.
fn strata_user(command: &str, name: &str) {
    let strata = strata_sandbox::nodes::binary("strata").unwrap();
    let output = std::process::Command::new(strata)
        .args(["user", command, name, "--shard-map"])
        .arg(cluster().shard_map_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "strata user {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn admin_endpoints_answer_403_until_the_user_is_granted_admin_and_at_once_after_it_is_revoked()
 {
    let name = unique("operator");
    let user = node(0).signup_ok(&name, PASSWORD).await;
    let (status, problem) =
        status_and_json(node(1).get("/v1/admin/shards", Some(&user.access)).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        node(1).get("/v1/admin/shards", None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    strata_user("grant-admin", &name);

    let (_, body) = status_and_json(node(0).refresh(&user.refresh).await).await;
    let refreshed = Tokens::from_body(&body);
    let (status, shards) = status_and_json(
        node(1)
            .get("/v1/admin/shards", Some(&refreshed.access))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shards}");
    assert_eq!(shards["shards"].as_array().unwrap().len(), 2);

    // Taking the role away works at once, with the token that still names it.
    strata_user("revoke-admin", &name);
    for i in 0..2 {
        let (status, problem) = status_and_json(
            node(i)
                .get("/v1/admin/shards", Some(&refreshed.access))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "node {i}: {problem}");
    }
}

#[tokio::test]
async fn logins_and_hashing_are_counted_in_metrics() {
    let name = unique("counted");
    node(1).signup_ok(&name, PASSWORD).await;
    node(1).login(&name, PASSWORD).await;
    let text = node(1).get("/metrics", None).await.text().await.unwrap();
    assert!(
        text.contains(r#"strata_logins_total{outcome="success"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"strata_password_hash_duration_seconds_bucket{op="hash""#),
        "{text}"
    );
    assert!(
        text.contains(r#"strata_signups_total{outcome="created"}"#),
        "{text}"
    );
}

/// The signup body for a fresh user.
fn signup_body(name: &str) -> Value {
    json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD})
}

/// Logins with the old password racing a password change (checked against the old hash
/// just before the change, their session made just after it ended the others) never
/// leave a live session behind.
#[tokio::test]
async fn no_login_racing_a_password_change_keeps_a_live_session() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let name = unique("racer");
    let owner = node(0).signup_ok(&name, PASSWORD).await;
    let stop = Arc::new(AtomicBool::new(false));
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, name) = (Arc::clone(&stop), name.clone());
            tokio::spawn(async move {
                let mut sessions = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) =
                        status_and_json(node(i % 2).login(&name, PASSWORD).await).await;
                    if status == StatusCode::OK {
                        sessions.push(Tokens::from_body(&body).access);
                    }
                }
                sessions
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let response = node(0)
        .put("/v1/me/password", &change, Some(&owner.access))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    stop.store(true, Ordering::Relaxed);
    let mut sessions = Vec::new();
    for racer in racers {
        sessions.extend(racer.await.unwrap());
    }
    assert!(!sessions.is_empty(), "some logins ran before the change");
    let mut alive = 0;
    for access in &sessions {
        if node(1).me_status(access).await != StatusCode::UNAUTHORIZED {
            alive += 1;
        }
    }
    assert_eq!(
        alive,
        0,
        "{alive} of {} sessions made with the old password outlived the change",
        sessions.len()
    );
}
