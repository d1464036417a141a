//! Logging set-up: structured `tracing` output, text or JSON, filtered by the config (or
//! `RUST_LOG` when set).

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, first thing in `main`.
///
/// A filter of targets and levels (`info,strata_router=debug`) is decided once per
/// call site, so every request's span costs nothing to enter. Only a filter that needs
/// more (directives on spans or fields, `[request]=debug`) gets the full `EnvFilter`,
/// which looks each span up under a lock whenever it is entered.
pub fn init(log: &LogConfig) {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|from_env| EnvFilter::try_new(from_env).is_ok())
        .unwrap_or_else(|| log.filter.clone());
    match targets_only(&directives) {
        Some(targets) => install(targets, log),
        None => install(EnvFilter::new(&directives), log),
    }
}

/// The directives as a plain filter of targets and levels, unless they say more.
/// `Targets` itself would take `[request]=debug` for a target named `[request]`.
fn targets_only(directives: &str) -> Option<Targets> {
    if directives.contains(['[', '{']) {
        return None;
    }
    directives.parse().ok()
}

fn install<F>(filter: F, log: &LogConfig)
where
    F: Layer<Registry> + Send + Sync + 'static,
{
    // Colours only for a person at a terminal: a log file or collector gets plain text
    // (and no request pays for escape codes nobody sees).
    let output = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let subscriber = tracing_subscriber::registry().with(filter);
    match log.format {
        LogFormat::Json => subscriber.with(output.json()).init(),
        LogFormat::Text => subscriber.with(output).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_levels_take_the_cheap_filter_and_span_directives_the_full_one() {
        for cheap in [
            "info",
            "warn,strata_router=debug",
            "strata_node::edge=trace",
        ] {
            assert!(targets_only(cheap).is_some(), "{cheap}");
        }
        for full in [
            "[request]=debug",
            "[request{path=/v1/tasks}]=trace",
            "info,[{request_id}]=debug",
        ] {
            assert!(
                targets_only(full).is_none(),
                "{full} would lose its span directive"
            );
            assert!(EnvFilter::try_new(full).is_ok(), "{full}");
        }
    }
}
