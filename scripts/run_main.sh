#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the demo (flags pass through).
source "$(dirname "$0")/env.sh"
python -m experiments.demo "$@"
