//! The Strata API node.
pub mod config;
