//! Golden files pin the stored encoding: every record the samples leave in sled, byte for byte,
//! under `controller/tests/golden/store/<tree>/<key>.msgpack`, with a JSON rendering of the same
//! bytes next to it for review, and `layout.json` listing the trees, their keys and the layout
//! version.
//!
//! `DROVER_BLESS=1 cargo test -p drover-controller golden` rewrites them. A changed file means
//! the stored layout changed: a field added with `#[serde(default)]` only needs the files
//! rewritten; anything older data would not read as before bumps `SCHEMA_VERSION` with a
//! migration (see ARCHITECTURE.md, "Controller data dir").

use super::{assert_samples, tests_dir, write_samples};
use crate::store::runs::step_key_text;
use crate::store::{SCHEMA_VERSION, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Trees whose content is not a msgpack record.
const NOT_RECORDS: [&str; 2] = ["meta", "__sled__default"];
/// Trees whose keys are the content (values empty): listed in `layout.json` only.
const KEYS_ONLY: [&str; 1] = ["run_index"];
/// Trees whose values are plain text (a run id).
const TEXT_VALUES: [&str; 1] = ["trigger_fired"];
/// Trees whose values are a file's bytes as they are (an output that came inside a result).
const BYTE_VALUES: [&str; 1] = ["small_outputs"];

/// File name (relative to the golden dir) -> content, for everything `store` holds.
fn render(store: &Store) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut trees = serde_json::Map::new();
    let mut names: Vec<String> = store
        .db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    for name in names {
        if NOT_RECORDS.contains(&name.as_str()) {
            continue;
        }
        let tree = store.db.open_tree(&name).unwrap();
        let mut keys = Vec::new();
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            let key = match name.as_str() {
                "run_steps" => step_key_text(&k),
                "step_scalars" => String::from_utf8(k.to_vec()).unwrap().replace('\0', "/"),
                _ => String::from_utf8(k.to_vec()).unwrap(),
            };
            if KEYS_ONLY.contains(&name.as_str()) {
                assert!(v.is_empty(), "{name}/{key} holds a value");
                keys.push(serde_json::Value::String(key));
                continue;
            }
            let base = format!("{name}/{}", key.replace('/', "."));
            if TEXT_VALUES.contains(&name.as_str()) || BYTE_VALUES.contains(&name.as_str()) {
                let extension = match TEXT_VALUES.contains(&name.as_str()) {
                    true => "txt",
                    false => "bin",
                };
                files.insert(PathBuf::from(format!("{base}.{extension}")), v.to_vec());
                keys.push(serde_json::Value::String(key));
                continue;
            }
            let json: serde_json::Value = rmp_serde::from_slice(&v)
                .unwrap_or_else(|e| panic!("{name}/{key} is not msgpack: {e}"));
            let json = serde_json::to_string_pretty(&json).unwrap() + "\n";
            files.insert(PathBuf::from(format!("{base}.msgpack")), v.to_vec());
            files.insert(PathBuf::from(format!("{base}.json")), json.into_bytes());
            keys.push(serde_json::Value::String(key));
        }
        trees.insert(name, keys.into());
    }
    let layout = serde_json::json!({"schema_version": SCHEMA_VERSION, "trees": trees});
    let layout = serde_json::to_string_pretty(&layout).unwrap() + "\n";
    files.insert(PathBuf::from("layout.json"), layout.into_bytes());
    files
}

/// Every file under `dir`, relative to it.
fn read_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                found.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

#[tokio::test]
async fn golden_files_pin_every_stored_record() {
    let golden_dir = tests_dir("golden/store");
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    write_samples(&store).await;
    assert_samples(&store.load().unwrap());
    let rendered = render(&store);

    if std::env::var_os("DROVER_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&golden_dir);
        for (rel, bytes) in &rendered {
            let path = golden_dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let golden = read_dir(&golden_dir);
    let missing: Vec<_> = rendered
        .keys()
        .filter(|k| !golden.contains_key(*k))
        .collect();
    let stale: Vec<_> = golden
        .keys()
        .filter(|k| !rendered.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the store writes records without golden files {missing:?} and no longer writes {stale:?}: the stored layout changed; rerun with DROVER_BLESS=1 (see this module's doc)"
    );
    for (rel, bytes) in &rendered {
        assert!(
            golden[rel] == *bytes,
            "{} changed: the stored layout changed; rerun with DROVER_BLESS=1 (see this module's doc)\nnow:\n{}",
            rel.display(),
            String::from_utf8_lossy(bytes)
        );
    }
    assert_golden_records_decode(&golden);
}

/// The golden records decode as this binary's types, so what they pin is what is read back.
fn assert_golden_records_decode(golden: &BTreeMap<PathBuf, Vec<u8>>) {
    use crate::automation::schedules::ScheduleRecord;
    use crate::automation::triggers::TriggerRecord;
    use crate::scheduler::{AgentRecord, CachedOutputs, StepRecord};
    use crate::store::runs::Header;
    use drover_protocol::validate::Pipeline;
    let mut decoded = 0;
    for (rel, bytes) in golden {
        if rel.extension().is_none_or(|e| e != "msgpack") {
            continue;
        }
        let tree = rel.parent().unwrap().to_string_lossy().into_owned();
        let ok = match tree.as_str() {
            "run_headers" => rmp_serde::from_slice::<Header>(bytes).map(drop),
            "run_pipelines" => rmp_serde::from_slice::<Pipeline>(bytes).map(drop),
            "run_steps" => rmp_serde::from_slice::<StepRecord>(bytes).map(drop),
            "cache" => rmp_serde::from_slice::<CachedOutputs>(bytes).map(drop),
            "agents" => rmp_serde::from_slice::<AgentRecord>(bytes).map(drop),
            "run_submits" => rmp_serde::from_slice::<crate::store::Submitted>(bytes).map(drop),
            "schedules" => rmp_serde::from_slice::<ScheduleRecord>(bytes).map(drop),
            "triggers" => rmp_serde::from_slice::<TriggerRecord>(bytes).map(drop),
            "step_scalars" => {
                rmp_serde::from_slice::<crate::store::scalars::StoredSeries>(bytes).map(drop)
            }
            "tasks" => rmp_serde::from_slice::<crate::store::TaskRecord>(bytes).map(drop),
            other => panic!("golden file {} of an unknown tree {other}", rel.display()),
        };
        ok.unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        decoded += 1;
    }
    assert_eq!(
        decoded, 21,
        "golden records: 3 headers, 2 pipelines, 8 steps, 1 cache entry, 1 agent, 2 submissions, \
         1 schedule, 1 trigger, 1 scalar series, 1 task"
    );
}
