#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then runs every test.
source "$(dirname "$0")/env.sh"
python -m pytest -q tests "$@"
