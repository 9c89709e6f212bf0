#!/usr/bin/env bash
# The test suite: sets up .venv if needed, installs the SLURM and PostgreSQL servers the cluster
# tests start (as root with apt; elsewhere those tests skip and say why), then runs every test
# on two processes (a file's tests stay in one process).
source "$(dirname "$0")/env.sh"
bash scripts/services.sh install \
  || echo "note: SLURM/PostgreSQL not installed; tests/test_slurm.py will skip" >&2
python -m pytest -q -n 2 --dist loadfile tests "$@"
