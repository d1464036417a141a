//! The Strata API node: a stateless HTTP server over the shard router.
//!
//! - [`config`] — the one typed configuration (file + `STRATA_NODE_*` overrides).
//! - [`startup`] — build (shard map, router, migration check, Redis, listener) and run.
//! - [`routes`] — every route and the middleware stack.
//! - [`request_context`] — request ids.
//! - [`error`] — the one error type, mapped to problem+json in one place.
//! - [`health`], [`metrics`] — `/healthz`, `/readyz`, `/metrics`.
//! - [`redis_handle`] — the shared Redis Cluster connection.
//! - [`state`] — what handlers share.
//! - [`telemetry`] — logging.

pub mod accounts;
pub mod auth;
pub mod background;
pub mod body_limit;
pub mod config;
pub mod consistency;
pub mod drain;
pub mod edge;
pub mod error;
pub mod health;
pub mod invalidation;
pub mod items;
pub mod json;
pub mod metrics;
pub mod objects;
pub mod query;
pub mod redis_handle;
pub mod request_context;
pub mod routes;
pub mod search;
pub mod startup;
pub mod state;
pub mod telemetry;
