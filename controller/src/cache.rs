//! The cache key of a step: sha256 over a canonical encoding of everything that decides its outputs.
//!
//! Two steps with the same key produce the same outputs, so a hit reuses them without running
//! anything, across runs and pipelines. The queue, timeout, retries and whether a function step
//! may start warm do not change what a step computes and are left out. A function step's blob arguments are part of its kind, so their
//! digests are in the key; which call added a step to a dynamic run is not.

use drover_protocol::message::{JobInput, JobKind};
use drover_protocol::validate::Step;
use drover_protocol::{Digest, OutputName};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// Bumped whenever the encoding below changes, so old entries stop matching.
const CACHE_KEY_VERSION: u32 = 1;

/// The fields hashed, in a fixed order; maps are `BTreeMap`s, so the JSON text is canonical.
#[derive(Serialize)]
struct KeyMaterial<'a> {
    version: u32,
    kind: &'a JobKind,
    env: &'a BTreeMap<String, String>,
    outputs: &'a BTreeMap<OutputName, String>,
    /// `(STEP.OUTPUT, digest)` sorted by reference: which content lands at which `${...}`.
    inputs: Vec<(String, &'a Digest)>,
}

/// The cache key of `step` given the artifacts it consumes. An error means a field's
/// `Serialize` broke the plain-data rule the encoding relies on.
pub fn cache_key(step: &Step, inputs: &[JobInput]) -> Result<String, serde_json::Error> {
    let mut refs: Vec<(String, &Digest)> = inputs
        .iter()
        .map(|i| (format!("{}.{}", i.step, i.output), &i.digest))
        .collect();
    refs.sort();
    let mut kind = step.kind.clone();
    if let JobKind::Function { prewarm, .. } = &mut kind {
        *prewarm = None;
    }
    let material = KeyMaterial {
        version: CACHE_KEY_VERSION,
        kind: &kind,
        env: &step.env,
        outputs: &step.outputs,
        inputs: refs,
    };
    let text = serde_json::to_vec(&material)?;
    Ok(hex::encode(Sha256::digest(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_protocol::spec::PipelineSpec;
    use drover_protocol::validate::validate;
    use drover_protocol::{OutputName, StepName};

    fn step(command: &str, env: &str) -> Step {
        let text = format!(
            "[pipeline]\nname = \"p\"\n[[step]]\nname = \"a\"\ncommand = {command}\nenv = {env}\n"
        );
        let spec = PipelineSpec::from_toml(&text).unwrap();
        validate(&spec, &BTreeMap::new()).unwrap().steps.remove(0)
    }

    fn key(step: &Step, inputs: &[JobInput]) -> String {
        cache_key(step, inputs).unwrap()
    }

    fn input(step: &str, output: &str, content: &[u8]) -> JobInput {
        JobInput {
            step: StepName::new(step).unwrap(),
            output: OutputName::new(output).unwrap(),
            digest: Digest::of_bytes(content),
            size: content.len() as u64,
            file_name: drover_protocol::FileName::new("f").unwrap(),
            content: None,
        }
    }

    #[test]
    fn key_depends_on_command_env_and_input_contents() {
        let base = key(&step("[\"true\"]", "{}"), &[]);
        assert_eq!(base.len(), 64);
        assert_eq!(base, key(&step("[\"true\"]", "{}"), &[]));
        assert_ne!(base, key(&step("[\"false\"]", "{}"), &[]));
        assert_ne!(base, key(&step("[\"true\"]", "{ K = \"v\" }"), &[]));
        let s = step("[\"true\"]", "{}");
        let one = key(&s, &[input("x", "o", b"1")]);
        assert_ne!(one, key(&s, &[input("x", "o", b"2")]));
    }

    #[test]
    fn key_depends_on_the_content_of_blob_arguments() {
        let text = "[pipeline]\nname = \"p\"\n[[step]]\nname = \"f\"\n\
                    function = { source = \"def f(x):\\n    return x\\n\", entry = \"f\" }\n";
        let spec = PipelineSpec::from_toml(text).unwrap();
        let plain = validate(&spec, &BTreeMap::new()).unwrap().steps.remove(0);
        let with_blob = |content: &[u8]| {
            let mut s = plain.clone();
            let JobKind::Function { blobs, .. } = &mut s.kind else {
                panic!("a function step");
            };
            let blob = drover_protocol::message::ArtifactRef {
                digest: Digest::of_bytes(content),
                size: content.len() as u64,
                file_name: drover_protocol::FileName::new("x.pkl").unwrap(),
            };
            blobs.insert("x".into(), blob);
            key(&s, &[])
        };
        assert_ne!(key(&plain, &[]), with_blob(b"1"));
        assert_eq!(with_blob(b"1"), with_blob(b"1"));
        assert_ne!(with_blob(b"1"), with_blob(b"2"));
    }

    #[test]
    fn starting_cold_or_warm_is_not_in_the_key() {
        let text = "[pipeline]\nname = \"p\"\n[[step]]\nname = \"f\"\n\
                    function = { source = \"def f():\\n    return 1\\n\", entry = \"f\", prewarm = false }\n";
        let spec = PipelineSpec::from_toml(text).unwrap();
        let cold = validate(&spec, &BTreeMap::new()).unwrap().steps.remove(0);
        let mut any = cold.clone();
        let JobKind::Function { prewarm, .. } = &mut any.kind else {
            panic!("a function step");
        };
        assert_eq!(*prewarm, Some(false), "the TOML field reaches the job");
        *prewarm = None;
        assert_eq!(key(&cold, &[]), key(&any, &[]));
    }

    #[test]
    fn input_order_does_not_matter_but_which_input_holds_what_does() {
        let s = step("[\"true\"]", "{}");
        let (a1, b2) = (input("a", "o", b"1"), input("b", "o", b"2"));
        let sorted = key(&s, &[a1.clone(), b2.clone()]);
        assert_eq!(sorted, key(&s, &[b2, a1]));
        let swapped = key(&s, &[input("a", "o", b"2"), input("b", "o", b"1")]);
        assert_ne!(sorted, swapped);
    }
}
