#!/usr/bin/env bash
# Sets up everything on a fresh machine (RabbitMQ, the drover build, the Python SDK), starts
# `drover up` in the background and runs the example pipelines on it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-rabbitmq.sh
scripts/python-env.sh
echo "build: cargo build --release"
cargo build --release -q
export PATH="$PWD/target/release:$PWD/.venv/bin:$PATH"
export DROVER_URL=${DROVER_URL:-http://127.0.0.1:8470}
data=${DROVER_DATA_DIR:-$PWD/drover-data}
mkdir -p "$data"

if drover runs >/dev/null 2>&1; then
  echo "drover: a controller already answers at $DROVER_URL; using it"
else
  echo "drover: starting 'drover up' (controller + 1 agent), log in $data/up.log"
  nohup drover up --agents 1 --concurrency 2 --data-dir "$data" >"$data/up.log" 2>&1 &
  echo $! >"$data/up.pid"
  for _ in $(seq 1 100); do
    drover runs >/dev/null 2>&1 && break
    sleep 0.2
  done
  drover runs >/dev/null || { cat "$data/up.log"; exit 1; }
fi

echo
echo "== examples/hello.toml (command steps, a diamond) =="
drover run examples/hello.toml --wait

if [ -f examples/pipeline_from_functions.py ]; then
  echo
  echo "== examples/pipeline_from_functions.py (the seed: Python function steps) =="
  python examples/make_iris_pickle.py
  python examples/pipeline_from_functions.py
  drover wait latest
fi

echo
drover runs
echo
echo "open $DROVER_URL/ for the web UI (runs, their DAGs, consoles and code); 'drover status <run id>' for a run's steps."
if [ -f "$data/up.pid" ]; then
  echo "drover up keeps running in the background: stop it with  kill $(cat "$data/up.pid")"
fi
