//! The load harness itself: a small run through the real daemon and one
//! straight to the sinks must deliver everything and report it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use postern_e2e::{bench_bin, postern_bin, workspace_root};
use serde_json::Value;

fn run(extra: &[&str]) -> Value {
    let out = Command::new(bench_bin())
        .args([
            "--messages",
            "300",
            "--sessions",
            "5",
            "--domains",
            "7",
            "--hosts",
            "2",
            "--timeout",
            "60",
        ])
        .args(extra)
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(line.trim()).unwrap()
}

#[test]
fn the_harness_measures_the_daemon_and_the_ceiling() {
    let daemon = postern_bin().to_str().unwrap().to_owned();
    let through = run(&["--daemon", &daemon]);
    assert_eq!(through["mode"], "postern");
    assert_eq!(through["accepted"], 300);
    assert_eq!(through["arrived"], 300);
    assert_eq!(through["all_arrived"], true);
    assert!(through["end_to_end_rate"].as_f64().unwrap() > 0.0);
    assert!(through["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(through["daemon_peak_rss_bytes"].as_u64().unwrap() > 0);

    let direct = run(&["--direct"]);
    assert_eq!(direct["mode"], "direct");
    assert_eq!(direct["arrived"], 300);
}

#[test]
fn an_unknown_scenario_is_refused_with_the_ones_there_are() {
    let out = Command::new(bench_bin())
        .args(["--scenario", "s3-100000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3-100000") && err.contains("s3-10000"),
        "{err}"
    );
}
