#!/usr/bin/env bash
# Writes link/text-order.txt: the functions an idle agent, an agent running steps and a
# controller serving runs execute, in the order first seen, so the linker places them together
# and each process faults in a few MiB of code instead of pages spread over the whole binary.
#
#   scripts/text-order.sh          build `drover` (release, `-p drover`), profile it, rewrite the file
#   scripts/text-order.sh --check  build it and fail when it holds under 90 % of the file's names
#
# Symbol names carry a hash of each crate's build settings, so the file matches binaries built
# with the same toolchain, Cargo.lock and package set (`cargo build --release -p drover`, the
# README's build); a crate's hash also moves when its dependencies do, so run this again after
# changing any of them (CI runs the check). Names it does not find the linker skips, so a stale
# file costs memory (an idle agent 16 MiB instead of 10), never a failed build. Rewriting needs
# valgrind and a broker on 127.0.0.1:5672 (started if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--check" ]; then
  cargo build --release -p drover >&2
  listed="$(grep -c . link/text-order.txt)"
  found="$(nm --defined-only target/release/drover | awk '{print $NF}' | sort -u \
    | comm -12 - <(sort -u link/text-order.txt) | wc -l)"
  echo "text-order: $found of the $listed functions in link/text-order.txt are in target/release/drover" >&2
  if [ $((found * 10)) -lt $((listed * 9)) ]; then
    echo "text-order: the file is stale (dependencies or toolchain changed): run scripts/text-order.sh and commit link/text-order.txt" >&2
    exit 1
  fi
  exit 0
fi

command -v valgrind >/dev/null || { echo "text-order: needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
scripts/ensure-rabbitmq.sh >&2
cargo build --release -p drover >&2

work="$(mktemp -d)"
trap 'pkill -TERM -f "$work/drover" 2>/dev/null || true; rm -rf "$work"' EXIT
cp target/release/drover "$work/drover"
# The default broker URL: a URL in the environment would make drover restart itself to hide
# it, and valgrind cannot follow that exec of /proc/self/exe.
unset DROVER_AMQP_URL DROVER_URL DROVER_TOKEN
export DROVER_NAMESPACE="textorder$RANDOM$RANDOM"
grind() { valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.$1" "${@:2}"; }

# 1. An idle agent: start-up, connecting, heartbeats.
(cd "$work" && timeout -s TERM 30 bash -c \
  "$(declare -f grind); work=$work; grind idle $work/drover agent --id idle --work-dir $work/w1 --concurrency 4 --python-env system" \
  > "$work/idle.log" 2>&1) || true

# 2. A controller and an agent, both profiled, running a 50-step pipeline three times (the
#    second and third all cache hits), then answering the API, the UI and /metrics.
grind controller "$work/drover" controller --data-dir "$work/ctl" --http 127.0.0.1:0 > "$work/ctl.log" 2>&1 &
grind agent "$work/drover" agent --id busy --work-dir "$work/w2" --concurrency 4 --python-env system > "$work/agent.log" 2>&1 &
for _ in $(seq 120); do [ -s "$work/ctl/controller.url" ] && break; sleep 1; done
export DROVER_URL="$(cat "$work/ctl/controller.url")"
python3 - "$work/steps.toml" <<'EOF'
import sys
out = '[pipeline]\nname = "text-order"\nproject = "text-order"\n'
for i in range(50):
    out += f'\n[[step]]\nname = "s{i}"\ncommand = ["true"]\ncache = true\n'
open(sys.argv[1], "w").write(out)
EOF
for _ in 1 2 3; do
  run="$("$work/drover" run "$work/steps.toml" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')"
  "$work/drover" wait "$run" >/dev/null
done
curl -s "$DROVER_URL/api/v1/runs" >/dev/null
curl -s "$DROVER_URL/" >/dev/null
curl -s "$DROVER_URL/metrics" >/dev/null
"$work/drover" status "$run" >/dev/null
pkill -TERM -f "cg.controller" || true
pkill -TERM -f "cg.agent" || true
for _ in $(seq 60); do pgrep -f "cg.controller|cg.agent" >/dev/null || break; sleep 1; done

python3 - "$work/drover" "$work/cg.idle" "$work/cg.agent" "$work/cg.controller" > link/text-order.txt <<'EOF'
import re, subprocess, sys
binary, profiles = sys.argv[1], sys.argv[2:]
defined = set()
for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
seen = {}
for path in profiles:
    for line in open(path, errors="replace"):
        m = re.match(r"^c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
        if m and m.group(1) in defined:
            seen.setdefault(m.group(1), len(seen))
if len(seen) < 1000:
    sys.exit(f"text-order: only {len(seen)} functions profiled; did the processes run?")
print("\n".join(sorted(seen, key=seen.get)))
EOF
echo "text-order: $(wc -l < link/text-order.txt) functions in link/text-order.txt" >&2
