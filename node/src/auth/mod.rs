//! Authentication: ids, password hashing, tokens, sessions in Redis, rate limits,
//! cookies and the extractors handlers use.

pub mod cookies;
pub mod extract;
pub mod ids;
pub mod passwords;
pub mod rate_limit;
pub mod sessions;
pub mod tokens;
pub mod verified_tokens;
