#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the smoke Odyssey study on the built-in JSB
# Chorales with two local workers and writes its report (flags pass through to launch.local).
source "$(dirname "$0")/env.sh"
python -m launch.local --study=experiments/odyssey.py:smoke --workers=2 "$@"
