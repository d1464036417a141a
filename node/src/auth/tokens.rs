//! Access and refresh tokens.
//!
//! Access tokens are short-lived JWTs signed with HMAC-SHA256. Verification pins the
//! algorithm, checks `iss`, `aud`, `exp` and the `typ` header (`at+jwt`, RFC 9068), and
//! finds the key by `kid`, so several keys verify at once during a rotation. Each token
//! names a session; the session must still exist in Redis (checked by the caller), which
//! is what makes logout immediate on every node.
//!
//! Refresh tokens are opaque to clients: `rt1.<user id>.<session id>.<secret>`, where the
//! secret is 256 random bits. Only its SHA-256 is stored. The ids let any node find the
//! session without a lookup table, the way entity ids carry their route.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::ids::{SessionId, UserId};
use crate::auth::verified_tokens::VerifiedTokens;
use crate::config::AuthConfig;

/// The JOSE `typ` of access tokens (RFC 9068).
const ACCESS_TYP: &str = "at+jwt";

/// Why a token was refused. Clients only ever see "not authenticated".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("token is not an access token")]
    WrongType,
    #[error("token is invalid: {0}")]
    Invalid(String),
}

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub roles: Vec<String>,
    pub iat: u64,
    pub exp: u64,
}

/// Signs and verifies access tokens with the configured keys.
pub struct TokenIssuer {
    signing_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    /// Tokens verified before, answered without the signature check.
    verified: VerifiedTokens,
    issuer: String,
    audience: String,
    access_ttl_secs: u64,
}

impl TokenIssuer {
    /// Builds the issuer from validated config (keys are base64 of 32+ bytes).
    pub fn new(auth: &AuthConfig) -> Self {
        let decode = |secret: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(secret)
                .expect("config validated the key encoding")
        };
        let decoding = auth
            .keys
            .iter()
            .map(|k| {
                (
                    k.id.clone(),
                    DecodingKey::from_secret(&decode(k.secret.expose())),
                )
            })
            .collect();
        let signing = auth
            .keys
            .iter()
            .find(|k| k.id == auth.signing_key_id)
            .expect("config validated the signing key");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            signing_kid: signing.id.clone(),
            encoding: EncodingKey::from_secret(&decode(signing.secret.expose())),
            decoding,
            validation,
            verified: VerifiedTokens::default(),
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            access_ttl_secs: auth.access_ttl_secs,
        }
    }

    /// Access token lifetime, as `expires_in`.
    pub fn access_ttl_secs(&self) -> u64 {
        self.access_ttl_secs
    }

    /// Signs an access token for a session.
    pub fn issue(&self, user: &UserId, session: &SessionId, roles: &[String]) -> String {
        let now = unix_now();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            sid: session.to_string(),
            roles: roles.to_vec(),
            iat: now,
            exp: now + self.access_ttl_secs,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        header.typ = Some(ACCESS_TYP.into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("HMAC signing cannot fail")
    }

    /// Verifies an access token and returns its claims. A token verified before is
    /// answered from memory while it has not expired.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if let Some(claims) = self.verified.get(token, unix_now(), self.validation.leeway) {
            return Ok(claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.typ.as_deref() != Some(ACCESS_TYP) {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.decoding.get(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        self.verified.insert(token, &data.claims);
        Ok(data.claims)
    }
}

/// A refresh token, split into what locates its session and the secret that proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub user: UserId,
    pub session: SessionId,
    secret: String,
}

impl RefreshToken {
    /// A new token for a session, with a fresh 256-bit secret.
    pub fn generate(user: &UserId, session: &SessionId) -> Self {
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        Self {
            user: user.clone(),
            session: session.clone(),
            secret,
        }
    }

    /// Parses what a client sent; anything else than the exact format is refused.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split('.');
        let (Some("rt1"), Some(user), Some(session), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let secret_ok = secret.len() == 43
            && base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(secret)
                .is_ok();
        if !secret_ok {
            return None;
        }
        Some(Self {
            user: UserId::parse(user)?,
            session: SessionId::parse(session)?,
            secret: secret.to_owned(),
        })
    }

    /// The SHA-256 of the secret, hex: what is stored.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// The token as given to the client.
    pub fn encode(&self) -> String {
        format!("rt1.{}.{}.{}", self.user, self.session, self.secret)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, SigningKeyConfig};

    fn auth(signing: &str, keys: &[(&str, u8)]) -> AuthConfig {
        AuthConfig {
            signing_key_id: signing.into(),
            keys: keys
                .iter()
                .map(|(id, byte)| SigningKeyConfig {
                    id: (*id).into(),
                    secret: Secret::new(
                        base64::engine::general_purpose::STANDARD.encode([*byte; 32]),
                    ),
                })
                .collect(),
            ..AuthConfig::default()
        }
    }

    fn ids() -> (UserId, SessionId) {
        (UserId::generate(), SessionId::generate())
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let issuer = TokenIssuer::new(&auth("k1", &[("k1", 1)]));
        let (user, session) = ids();
        let claims = issuer
            .verify(&issuer.issue(&user, &session, &["user".into()]))
            .unwrap();
        assert_eq!(
            (claims.sub, claims.sid, claims.roles),
            (user.to_string(), session.to_string(), vec!["user".into()])
        );
    }

    #[test]
    fn during_a_rotation_old_and_new_keys_both_verify() {
        let old = TokenIssuer::new(&auth("k1", &[("k1", 1)]));
        let rotating = TokenIssuer::new(&auth("k2", &[("k1", 1), ("k2", 2)]));
        let (user, session) = ids();
        assert!(rotating.verify(&old.issue(&user, &session, &[])).is_ok());
        assert!(
            rotating
                .verify(&rotating.issue(&user, &session, &[]))
                .is_ok()
        );
        let after = TokenIssuer::new(&auth("k2", &[("k2", 2)]));
        assert_eq!(
            after.verify(&old.issue(&user, &session, &[])),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn a_token_from_another_issuer_or_audience_is_refused() {
        let ours = TokenIssuer::new(&auth("k1", &[("k1", 1)]));
        let mut other_config = auth("k1", &[("k1", 1)]);
        other_config.audience = "someone-else".into();
        let (user, session) = ids();
        assert!(matches!(
            ours.verify(&TokenIssuer::new(&other_config).issue(&user, &session, &[])),
            Err(TokenError::Invalid(_))
        ));
        let mut other_config = auth("k1", &[("k1", 1)]);
        other_config.issuer = "evil".into();
        assert!(matches!(
            ours.verify(&TokenIssuer::new(&other_config).issue(&user, &session, &[])),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn refresh_tokens_round_trip_and_hash_their_secret_only() {
        let (user, session) = ids();
        let token = RefreshToken::generate(&user, &session);
        let parsed = RefreshToken::parse(&token.encode()).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.secret_hash().len(), 64);
        assert_ne!(
            RefreshToken::generate(&user, &session).secret_hash(),
            token.secret_hash()
        );
    }

    #[test]
    fn malformed_refresh_tokens_are_refused() {
        let (user, session) = ids();
        let good = RefreshToken::generate(&user, &session).encode();
        for bad in [
            String::new(),
            "rt1".into(),
            good.replacen("rt1", "rt2", 1),
            format!("{good}.extra"),
            good[..good.len() - 1].to_owned(),
            good.replace(&user.to_string(), "not-a-user"),
        ] {
            assert_eq!(RefreshToken::parse(&bad), None, "{bad:?}");
        }
    }
}
