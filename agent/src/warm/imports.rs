//! The modules a step's source imports, read from its text: what a warm parent preloads.
//!
//! A plain reading of `import` and `from ... import` lines (at any indentation, so imports
//! inside functions count) is enough: a name that is not a module only fails to preload, and
//! the step imports what is missing itself. `from a import b` gives `a` and `a.b`: the parent
//! loads `a.b` as a submodule, or else as an attribute of `a` (a package that loads its
//! attributes lazily, such as `drover.StorageManager`, would otherwise load it in every step).

use std::collections::BTreeSet;

/// Modules never preloaded: they start threads or initialise devices (CUDA) when imported, or
/// are too big to load on a guess. `--python-prewarm-exclude` adds to them.
pub const DEFAULT_EXCLUDE: &[&str] = &[
    "torch",
    "tensorflow",
    "jax",
    "jaxlib",
    "cupy",
    "pycuda",
    "tensorrt",
    "keras",
    "mxnet",
    "paddle",
    "numba",
    "ray",
    "dask",
    "distributed",
    "grpc",
    "tkinter",
    "sentry_sdk",
];

/// The modules `source` imports (`import a.b` and `from a.b import c` give `a.b`), absolute
/// imports only, without those whose top-level package is in `exclude`.
pub fn modules(source: &str, exclude: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let line = line.trim_start();
        let names: Vec<String> = if let Some(rest) = line.strip_prefix("import ") {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().next())
                .map(str::to_string)
                .collect()
        } else if let Some(rest) = line.strip_prefix("from ") {
            match rest.split_once(" import ") {
                Some((module, what)) => {
                    let module = module.trim();
                    let what = what.split('#').next().unwrap_or_default();
                    std::iter::once(module.to_string())
                        .chain(
                            what.trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
                                .split(',')
                                .filter_map(|part| part.split_whitespace().next())
                                .filter(|name| is_identifier(name))
                                .map(|name| format!("{module}.{name}")),
                        )
                        .collect()
                }
                None => Vec::new(),
            }
        } else {
            continue;
        };
        for name in names {
            let top = name.split('.').next().unwrap_or_default();
            if name.split('.').all(is_identifier) && top != "__future__" && !exclude.contains(top) {
                found.insert(name);
            }
        }
    }
    found
}

/// The default exclusions plus `extra`.
pub fn exclusions(extra: &[String]) -> BTreeSet<String> {
    DEFAULT_EXCLUDE
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect()
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_at_any_depth_are_found_and_excluded_ones_dropped() {
        let source = "\
from __future__ import annotations
import os, sys as system
import numpy.linalg as la
from pandas.api import types
from pandas.api import (x,  # a comment
from drover import StorageManager as SM  # lazily loaded
from . import sibling
from .x import y

def f():
    import sklearn.linear_model
    from torch import nn
    text = 'import nothing here'
    return 1
";
        let found = modules(source, &exclusions(&["sys".to_string()]));
        let found: Vec<&str> = found.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            [
                "drover",
                "drover.StorageManager",
                "numpy.linalg",
                "os",
                "pandas.api",
                "pandas.api.types",
                "pandas.api.x",
                "sklearn.linear_model",
            ]
        );
    }

    #[test]
    fn names_that_are_not_identifiers_are_ignored() {
        let found = modules(
            "import 9lives\nimport a-b\nfrom x\nimport a..b",
            &BTreeSet::new(),
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
