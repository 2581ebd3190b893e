//! The crate boundaries ARCHITECTURE.md promises, checked on the manifests: only this crate
//! (and the benchmarks, which measure raw lapin) may depend on lapin, and the contract crates
//! (`protocol`, `api`) depend on no transport, runtime or HTTP stack at all.

#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::Path;

/// The dependency names of one manifest's `[dependencies]` table.
fn dependencies(crate_dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join(crate_dir).join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            names.push(name.trim().to_string());
        }
    }
    names
}

#[test]
fn only_the_amqp_crate_and_the_benchmarks_depend_on_lapin() {
    for dir in [".", "protocol", "api", "storage", "controller", "agent"] {
        let deps = dependencies(dir);
        assert!(
            !deps.iter().any(|d| d == "lapin"),
            "{dir}/Cargo.toml depends on lapin: use drover-amqp instead"
        );
    }
    assert!(dependencies("amqp").iter().any(|d| d == "lapin"));
}

#[test]
fn the_contract_crates_perform_no_io() {
    for dir in ["protocol", "api"] {
        let deps = dependencies(dir);
        assert!(!deps.is_empty(), "{dir}: no dependencies read");
        for io in [
            "lapin",
            "tokio",
            "axum",
            "reqwest",
            "sled",
            "object_store",
            "drover-amqp",
        ] {
            assert!(
                !deps.iter().any(|d| d == io),
                "{dir}/Cargo.toml depends on {io}; contract crates stay free of I/O"
            );
        }
    }
}
