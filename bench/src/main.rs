//! `strata-bench`: the load-bench harness. Scenarios arrive with their own issue; until
//! then the binary says so rather than pretending to measure anything.

use clap::Parser;

/// Strata load-bench harness.
#[derive(Parser)]
#[command(name = "strata-bench", version, about)]
struct Args {
    /// Scenario to run.
    scenario: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    eprintln!(
        "strata-bench: no scenarios are implemented yet{}",
        args.scenario
            .map(|s| format!(" (asked for {s:?})"))
            .unwrap_or_default()
    );
    std::process::ExitCode::from(2)
}
