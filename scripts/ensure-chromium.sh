#!/usr/bin/env bash
# Makes sure a headless-capable Chromium is on PATH for the browser test: installs Debian's
# `chromium` package when none is.
set -euo pipefail

for browser in chromium chromium-browser google-chrome; do
  if command -v "$browser" >/dev/null 2>&1; then
    echo "chromium: $("$browser" --version 2>/dev/null || echo "$browser")"
    exit 0
  fi
done
echo "chromium: installing chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
echo "chromium: $(chromium --version)"
