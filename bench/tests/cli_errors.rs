//! The harness fails with a clear message, never a panic: an unreachable cluster, a
//! malformed scenario, a missing cluster file, a bad report to compare.

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args(args)
        .output()
        .expect("run strata-bench");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "strata-bench panicked: {stderr}"
    );
    (output.status.success(), stderr)
}

fn cluster_file_pointing_at(url: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("strata-bench-cluster-{}.json", std::process::id()));
    std::fs::write(
        &path,
        format!(r#"{{"nodes": [{{"url": "{url}"}}], "postgres": []}}"#),
    )
    .unwrap();
    path
}

#[test]
fn an_unreachable_cluster_ends_with_a_clear_message() {
    // Port 9 (discard) on loopback: nothing listens there.
    let cluster = cluster_file_pointing_at("http://127.0.0.1:9");
    let (ok, stderr) = bench(&[
        "--cluster",
        cluster.to_str().unwrap(),
        "--duration",
        "1",
        "run",
        "read-heavy",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("http://127.0.0.1:9 does not answer"),
        "{stderr}"
    );
    let (ok, stderr) = bench(&[
        "--duration",
        "1",
        "login-storm",
        "--url",
        "http://127.0.0.1:9",
    ]);
    assert!(!ok);
    assert!(stderr.contains("does not answer"), "{stderr}");
}

#[test]
fn a_malformed_scenario_ends_with_a_clear_message() {
    let cluster = cluster_file_pointing_at("http://127.0.0.1:9");
    let cluster = cluster.to_str().unwrap();
    let (ok, stderr) = bench(&["--cluster", cluster, "run", "read-hevy"]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown scenario or operation \"read-hevy\""),
        "{stderr}"
    );
    let (ok, stderr) = bench(&["--cluster", cluster, "run", "get-post=lots"]);
    assert!(!ok);
    assert!(stderr.contains("not op=weight"), "{stderr}");
    let (ok, stderr) = bench(&["--cluster", cluster, "run", "read-heavy", "--rate=-5"]);
    assert!(!ok);
    assert!(
        stderr.contains("--rate must be a positive number"),
        "{stderr}"
    );
}

#[test]
fn a_missing_cluster_file_or_a_bad_report_ends_with_a_clear_message() {
    let (ok, stderr) = bench(&["--cluster", "/nonexistent/cluster.json", "run", "mixed"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read /nonexistent/cluster.json"),
        "{stderr}"
    );
    let not_a_report = cluster_file_pointing_at("http://127.0.0.1:9");
    let path = not_a_report.to_str().unwrap();
    let (ok, stderr) = bench(&["compare", path, path]);
    assert!(!ok);
    assert!(stderr.contains("is not a strata-bench report"), "{stderr}");
}
