//! Forged and misused tokens are refused. Each forgery is built from a real session's
//! claims and the cluster's real key, changing one thing, next to a control token that
//! differs only in being right, so a refusal can only come from that one thing.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{PASSWORD, cluster, node, unique};

fn key() -> EncodingKey {
    let secret = cluster().spec.auth.keys[0].secret.expose();
    EncodingKey::from_secret(
        &base64::engine::general_purpose::STANDARD
            .decode(secret)
            .unwrap(),
    )
}

fn sign(claims: &Value, kid: &str, typ: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    header.typ = Some(typ.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A real session's claims, as the node would sign them.
async fn real_claims() -> (Value, String) {
    let tokens = node(0).signup_ok(&unique("forgery"), PASSWORD).await;
    let payload = tokens.access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    (claims, tokens.refresh)
}

#[tokio::test]
async fn forged_or_misused_tokens_are_refused() {
    let (claims, refresh) = real_claims().await;
    let kid = cluster().spec.auth.signing_key_id.clone();
    let control = sign(&claims, &kid, "at+jwt", &key());
    assert_eq!(
        node(1).me_status(&control).await,
        StatusCode::OK,
        "the control token is accepted"
    );

    let with = |field: &str, value: Value| {
        let mut changed = claims.clone();
        changed[field] = value;
        changed
    };
    let now = claims["iat"].as_u64().unwrap();
    let mut forgeries = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
                b64(&claims)
            ),
        ),
        (
            "expired",
            sign(&with("exp", json!(now - 3600)), &kid, "at+jwt", &key()),
        ),
        (
            "wrong audience",
            sign(&with("aud", json!("another-api")), &kid, "at+jwt", &key()),
        ),
        (
            "wrong issuer",
            sign(&with("iss", json!("evil")), &kid, "at+jwt", &key()),
        ),
        ("unknown kid", sign(&claims, "not-a-key", "at+jwt", &key())),
        (
            "wrong key",
            sign(
                &claims,
                &kid,
                "at+jwt",
                &EncodingKey::from_secret(&[7u8; 32]),
            ),
        ),
        ("not an access token", sign(&claims, &kid, "JWT", &key())),
        ("refresh token as access token", refresh),
        ("empty", String::new()),
    ];
    // A changed payload under the control token's signature.
    let mut parts: Vec<String> = control.split('.').map(str::to_owned).collect();
    parts[1] = b64(&with("roles", json!(["user", "admin"])));
    forgeries.push(("changed payload", parts.join(".")));
    // HS256 signature with the header claiming another algorithm.
    let mut parts: Vec<String> = control.split('.').map(str::to_owned).collect();
    parts[0] = b64(&json!({"alg": "HS512", "typ": "at+jwt", "kid": kid}));
    forgeries.push(("algorithm swapped", parts.join(".")));

    for (what, token) in forgeries {
        let response = node(1).get("/v1/me", Some(&token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
    }
}
