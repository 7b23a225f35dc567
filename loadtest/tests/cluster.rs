//! The harness against a cluster it spawns itself, end to end: the
//! `loadtest` binary with `--spawn-cluster 2` starts a `redis-server` and
//! two broker processes in cluster mode, runs a short `fanout` with
//! publishers on the first node and subscribers on both, and stops them
//! all. Needs `redis-server` on PATH (scripts/test installs it) and the
//! broker binary, which is built here if it is not next to `loadtest`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Fails the test, saying what to install, if `redis-server` is missing.
fn require_redis_server() {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "this test needs redis-server on PATH: apt-get install redis-server \
         (scripts/test installs it)"
    );
}

/// The `pubsub` binary of the profile `loadtest` was built with, next to
/// it; built with cargo first if it is not there (`cargo test -p loadtest`
/// builds only the broker's library).
fn broker_binary() -> PathBuf {
    let loadtest = Path::new(env!("CARGO_BIN_EXE_loadtest"));
    let dir = loadtest.parent().expect("target/<profile>");
    let broker = dir.join("pubsub");
    if !broker.is_file() {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile directory in {}", dir.display()),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--offline", "-p", "pubsub", "--bin", "pubsub"])
            .args(["--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p pubsub failed");
    }
    assert!(broker.is_file(), "no broker at {}", broker.display());
    broker
}

/// The pids in the `spawned ... (pid N) ...` lines of the harness.
fn spawned_pids(stderr: &str) -> Vec<i32> {
    stderr
        .lines()
        .filter(|line| line.starts_with("spawned "))
        .filter_map(|line| {
            let after = &line[line.find("(pid ")? + "(pid ".len()..];
            after[..after.find(')')?].parse().ok()
        })
        .collect()
}

#[test]
fn fanout_across_a_spawned_two_node_cluster_loses_nothing() {
    require_redis_server();
    let broker = broker_binary();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["fanout", "--spawn-cluster", "2", "--broker"])
        .arg(&broker)
        .args(["--publishers", "2", "--publish-on", "0"])
        .args(["--topics", "2", "--subscribers", "3", "--size", "200"])
        .args(["--rate", "0", "--window", "16", "--warmup", "0.2"])
        .args(["--duration", "1", "--threads", "2", "--grace", "10"])
        .args(["--env", "WORKERS=1", "--quiet", "--json"])
        .output()
        .expect("run the loadtest binary");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("the JSON line")).expect("JSON");
    let figure = |key: &str| report[key].as_u64().unwrap_or_else(|| panic!("{key}"));
    assert!(figure("published") > 0, "{stdout}");
    // Every message reaches the 3 subscribers of its topic, on both nodes.
    assert_eq!(figure("expected"), figure("published") * 3, "{stdout}");
    assert_eq!(figure("delivered"), figure("expected"), "{stdout}");
    for key in [
        "lost",
        "duplicates",
        "out_of_order",
        "gaps",
        "disconnects",
        "errors",
    ] {
        assert_eq!(figure(key), 0, "{key}: {stdout}");
    }
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{stdout}");
    let placed: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| {
            (
                n["subscribers"].as_u64().unwrap(),
                n["publishers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(placed, [(3, 2), (3, 0)], "{stdout}");
    assert_ne!(nodes[0]["addr"], nodes[1]["addr"]);
    // The publishes went through Redis, from the first node only.
    assert!(
        nodes[0]["backplane_round_trips"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    assert_eq!(nodes[1]["backplane_round_trips"].as_u64(), Some(0));
    for node in nodes {
        assert!(node["cpu_pct"].is_number() && node["rss_kib"].is_number());
    }
    assert!(report["redis_cpu_pct"].is_number(), "{stdout}");
    // Redis and both nodes were started, and are stopped.
    let pids = spawned_pids(&stderr);
    assert_eq!(pids.len(), 3, "{stderr}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
}
