#!/usr/bin/env bash
# Creates .venv with the drover Python SDK (editable), its test tools (moto_server: the local
# S3-compatible server the S3 artifact tests start) and the seed's pinned packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q uv
# The seed example needs pandas<3 and scikit-learn<1.8 (see examples/README or NOTES in the docs).
.venv/bin/uv pip install -q --python .venv/bin/python -e sdk/python pytest "pandas==2.3.3" "scikit-learn==1.7.2" "moto[server]==5.2.5"
echo "python: .venv ready ($(.venv/bin/python --version))"
