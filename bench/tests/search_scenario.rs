//! The `search` scenario end to end on a small real cluster: it loads a corpus into the
//! shards, builds the Postgres baseline, times a rebuild, queries both sides and writes
//! a report with every ratio. (Its figures are not checked here: they are the
//! benchmark's to report, not a test's to bound.)

use std::process::Command;

use strata_sandbox::Cluster;

#[test]
fn the_search_scenario_runs_end_to_end_on_a_small_corpus() {
    let cluster = Cluster::builder().start().expect("start a cluster");
    let out = tempfile::tempdir().unwrap();
    let cluster_file = cluster.spec.data_dir.join("cluster.json");
    let output = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .arg("--cluster")
        .arg(&cluster_file)
        .arg("--out")
        .arg(out.path())
        .args([
            "search",
            "--posts",
            "3000",
            "--queries",
            "20",
            "--users",
            "3",
        ])
        .output()
        .expect("run strata-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "strata-bench search failed: {stderr}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("search.json")).unwrap())
            .unwrap();
    let indexing = &report["baselines"]["indexing"];
    assert!(
        indexing["documents"].as_f64().unwrap() >= 3000.0,
        "the rebuilt index holds the corpus: {indexing}"
    );
    assert!(indexing["index_bytes"].as_f64().unwrap() > 0.0);
    assert!(indexing["resident_bytes_peak"].as_f64().unwrap() > 0.0);
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 6, "p50 and p99 for term, phrase and prefix");
    for ratio in ratios {
        let value = ratio["value"].as_f64().unwrap();
        assert!(value.is_finite() && value > 0.0, "{ratio}");
    }
    // Term queries are words of the corpus: both sides find something for each.
    let hits = &report["baselines"]["queries answered with at least one hit"];
    assert_eq!(hits["strata term"], "20/20", "{hits}");
    assert_eq!(hits["postgres term"], "20/20", "{hits}");
    let freshness = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "freshness")
        .expect("a freshness phase");
    assert_eq!(freshness["endpoints"][0]["ok"], 20, "{freshness}");
}
