#!/usr/bin/env bash
# Runs every check and test: format, lints, Rust unit + end-to-end tests (one in headless
# Chromium), then the multi-host suite (network namespaces; needs root and iproute2) on its own
# so its CPU-bound fan-out does not starve the timing of other tests, then the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-rabbitmq.sh
scripts/ensure-chromium.sh
scripts/python-env.sh
export PATH="$PWD/.venv/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  # Build every test once into an archive, then run it twice: everything but the multi-host
  # suite, then that suite alone. The e2e tests run the `drover` unpacked with them
  # (`NEXTEST_BIN_EXE_drover`), but read fixtures through paths compiled in
  # (`CARGO_MANIFEST_DIR`), so the archive is run from this checkout.
  archive=target/nextest/tests.tar.zst
  mkdir -p "$(dirname "$archive")"
  cargo nextest archive --workspace --archive-file "$archive"
  run=(cargo nextest run --archive-file "$archive" --workspace-remap . --no-fail-fast)
  "${run[@]}" -E 'not test(/^hosts::/)'
  "${run[@]}" -j 1 -E 'binary(e2e) & test(/^hosts::/)'
else
  cargo test --workspace --no-fail-fast -- --skip hosts::
  cargo test --test e2e --no-fail-fast -- --test-threads 1 hosts::
fi
# The Python SDK and the harness: lints and types first, then the tests.
.venv/bin/ruff check --config sdk/python/pyproject.toml sdk/python agent/harness
.venv/bin/mypy --config-file sdk/python/pyproject.toml sdk/python/drover agent/harness/drover_harness.py agent/harness/drover_warm.py agent/harness/drover_compile.py agent/harness/drover_bytecache.py
.venv/bin/python -m pytest -q sdk/python/tests agent/harness deploy/tests
