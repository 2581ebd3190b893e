#!/usr/bin/env bash
# Runs every check and test: format, lints, Rust unit + end-to-end tests (one in headless
# Chromium), Python SDK tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-rabbitmq.sh
scripts/ensure-chromium.sh
scripts/python-env.sh
export PATH="$PWD/.venv/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
.venv/bin/python -m pytest -q sdk/python/tests agent/harness deploy/tests
