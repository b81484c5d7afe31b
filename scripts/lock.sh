#!/usr/bin/env bash
# Regenerate the hashed lock files of the tool's own environment from pyproject.toml.
# requirements.lock: what `auditor` needs at run time; requirements-dev.lock: plus tests and linters.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links)
pip-compile "${common[@]}" -o requirements.lock pyproject.toml
pip-compile "${common[@]}" --extra dev -o requirements-dev.lock pyproject.toml
