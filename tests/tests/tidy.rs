//! Tidy checks on the shape of the workspace, from `cargo metadata`:
//!
//! - the pure crates (the domain core, health, steering, the decision engine, the
//!   DNS core) never gain a dependency — direct or transitive, normal or build — on
//!   an async runtime, gRPC, protobuf, etcd or HTTP crate;
//! - every workspace member is named in ARCHITECTURE.md's code map.
//!
//! - the pure crates read no clock (time is an argument);
//! - agents and probers never depend on the store or etcd;
//! - in the control-plane server, wire types stay in the gRPC adapters and every
//!   store write but the per-replica agent mirror goes through a fenced transaction;
//! - production builds do not compile the store's conformance suite.
//!
//! These are the architecture invariants a reviewer would otherwise check by eye;
//! ARCHITECTURE.md names the check behind each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Crates that must stay pure.
const PURE: &[&str] = &[
    "meridian-core",
    "meridian-health",
    "meridian-steering",
    "meridian-engine",
    "meridian-dns-core",
];

/// What a pure crate must never depend on: I/O and the wire types.
const IO_CRATES: &[&str] = &[
    "tokio",
    "tonic",
    "prost",
    "etcd-client",
    "hyper",
    "axum",
    "reqwest",
    "meridian-proto",
];

/// The pure crates' source directories (relative to the workspace root).
const PURE_SOURCES: &[&str] = &[
    "control-plane/core/src",
    "control-plane/health/src",
    "control-plane/steering/src",
    "control-plane/engine/src",
    "dns-agent/core/src",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Only this machine's platform: what is compiled here (and no download of
    // crates for other platforms).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("-vV").output().expect("run rustc -vV");
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            &host,
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package id → name, and package id → ids of its normal and build dependencies.
fn graph(meta: &Value) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let names = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut deps = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap().to_string();
        let non_dev: Vec<String> = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build")
            })
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        deps.insert(id, non_dev);
    }
    (names, deps)
}

/// The I/O crates `root` reaches, each with the path that reaches it.
fn io_reached(root: &str, names: &BTreeMap<String, String>, deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    reached(root, IO_CRATES, names, deps)
}

/// The crates of `forbidden` that `root` reaches, each with the path that reaches it.
fn reached(
    root: &str,
    forbidden: &[&str],
    names: &BTreeMap<String, String>,
    deps: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let start = names
        .iter()
        .find(|(_, n)| n.as_str() == root)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("{root} is not in the workspace"));
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(start, vec![root.to_string()])];
    while let Some((id, path)) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in deps.get(&id).into_iter().flatten() {
            let name = &names[dep];
            let mut next = path.clone();
            next.push(name.clone());
            if forbidden.contains(&name.as_str()) {
                found.push(next.join(" → "));
            } else {
                stack.push((dep.clone(), next));
            }
        }
    }
    found
}

#[test]
fn pure_crates_depend_on_no_io_crate() {
    let meta = metadata();
    let (names, deps) = graph(&meta);
    let mut violations = Vec::new();
    for krate in PURE {
        violations.extend(io_reached(krate, &names, &deps));
    }
    assert!(
        violations.is_empty(),
        "pure crates must not depend on {IO_CRATES:?}; found:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn the_check_itself_catches_an_io_dependency() {
    // The server crate is not pure: the same walk must find tokio and tonic there,
    // or the check above could never fail.
    let meta = metadata();
    let (names, deps) = graph(&meta);
    let found = io_reached("meridian-control-plane", &names, &deps);
    assert!(found.iter().any(|p| p.ends_with("→ tokio")), "{found:?}");
    assert!(found.iter().any(|p| p.ends_with("→ tonic")), "{found:?}");
}

#[test]
fn every_workspace_member_is_in_the_code_map() {
    let meta = metadata();
    let architecture = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    let mut missing = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        if !members.contains(&p["id"].as_str().unwrap()) {
            continue;
        }
        let name = p["name"].as_str().unwrap();
        if !architecture.contains(&format!("`{name}`")) {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map must name every workspace member in backticks; missing: {missing:?}"
    );
    for krate in PURE {
        assert!(
            architecture.contains(&format!("`{krate}`")),
            "pure crate {krate} is not in ARCHITECTURE.md"
        );
    }
}

#[test]
fn agents_and_probers_never_depend_on_the_store() {
    let meta = metadata();
    let (names, deps) = graph(&meta);
    let mut found = Vec::new();
    for krate in [
        "meridian-dns-agent",
        "meridian-edge-agent",
        "meridian-prober",
        "meridianctl",
    ] {
        found.extend(reached(krate, &["meridian-store", "etcd-client"], &names, &deps));
    }
    assert!(
        found.is_empty(),
        "edge agents, probers and the CLI talk to replicas only:\n  {}",
        found.join("\n  ")
    );
}

/// Every `.rs` file under `dir`, with its text up to the first `#[cfg(test)]` (tests
/// may do what production code must not); files named `tests.rs` are skipped.
fn production_sources(dir: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![workspace_root().join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let text = match text.find("#[cfg(test)]") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                };
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// `needle` occurrences in production code under `dir`, outside the `allowed` files.
fn mentions(dir: &str, needles: &[&str], allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in production_sources(dir) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if allowed.contains(&name.as_str()) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn pure_crates_read_no_clock() {
    let mut found = Vec::new();
    for dir in PURE_SOURCES {
        found.extend(mentions(
            dir,
            &["SystemTime::now", "Instant::now", "thread::sleep"],
            &[],
        ));
    }
    assert!(
        found.is_empty(),
        "pure crates take time as an argument:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_server_keeps_wire_types_in_its_grpc_adapters() {
    let found = mentions(
        "control-plane/server/src",
        &["meridian_proto", "pb::"],
        &["grpc.rs", "convert.rs", "probe_api.rs", "plan_api.rs"],
    );
    assert!(
        found.is_empty(),
        "prost types outside the gRPC adapters:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_server_writes_only_through_fenced_transactions() {
    // plan_api.rs mirrors this replica's own agent table (not leader-only state).
    let found = mentions(
        "control-plane/server/src",
        &[".txn(", "store.put(", "store.delete(", ".delete_prefix("],
        &["plan_api.rs"],
    );
    assert!(
        found.is_empty(),
        "leader-only writes go through meridian_store::election::fenced_txn:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn production_builds_do_not_compile_the_conformance_suite() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "-p",
            "meridian-control-plane",
            "--edges",
            "normal,build,features",
            "-i",
            "meridian-store",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("meridian-store"), "{tree}");
    assert!(
        !tree.contains("conformance"),
        "the control plane enables the conformance feature:\n{tree}"
    );
}
