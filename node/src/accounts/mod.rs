//! Accounts: names and password rules (pure), and users plus the login-name index in
//! Postgres.

pub mod names;
pub mod password_policy;
pub mod store;
