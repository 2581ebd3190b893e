//! Bundles the Python SDK (`sdk/python/drover/**/*.py`), the step harness, the warm parent and
//! its bytecode compiler and cache into the agent binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let sdk = manifest.join("../sdk/python/drover");
    let harness = manifest.join("harness/drover_harness.py");
    let warm = manifest.join("harness/drover_warm.py");
    let compile = manifest.join("harness/drover_compile.py");
    let bytecache = manifest.join("harness/drover_bytecache.py");
    println!("cargo:rerun-if-changed={}", sdk.display());
    println!("cargo:rerun-if-changed={}", harness.display());
    println!("cargo:rerun-if-changed={}", warm.display());
    println!("cargo:rerun-if-changed={}", compile.display());
    println!("cargo:rerun-if-changed={}", bytecache.display());

    let mut files = Vec::new();
    python_files(&sdk, "drover", &mut files);
    files.sort();

    let mut code =
        String::from("/// `(path inside the bundle, contents)` of every bundled file.\n");
    code.push_str("pub const FILES: &[(&str, &str)] = &[\n");
    for (name, file) in &files {
        entry(&mut code, name, file);
    }
    entry(&mut code, "drover_harness.py", &harness);
    entry(&mut code, "drover_warm.py", &warm);
    entry(&mut code, "drover_compile.py", &compile);
    entry(&mut code, "drover_bytecache.py", &bytecache);
    code.push_str("];\n");

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("bundle.rs"), code).expect("cannot write bundle.rs");
}

/// Every `.py` file under `dir` (subpackages too), as (path inside the bundle, file).
fn python_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the Python SDK at {}: {e}", dir.display()));
    for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
        let name = format!("{prefix}/{}", file_name(&path));
        if path.is_dir() && path.join("__init__.py").is_file() {
            python_files(&path, &name, out);
        } else if path.extension().is_some_and(|x| x == "py") {
            out.push((name, path));
        }
    }
}

fn entry(code: &mut String, name: &str, path: &Path) {
    let path = path
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = writeln!(
        code,
        "    ({name:?}, include_str!({:?})),",
        path.display().to_string()
    );
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
