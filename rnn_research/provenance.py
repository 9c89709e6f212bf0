"""What a run ran with, kept beside what it wrote: `env.json` in every sweep directory, trial
workdir and benchmark result.

    {"time", "command" (sys.argv, URL passwords masked), "python", "executable", "platform",
     "host", "git": {"root", "revision", "dirty"} of the checkout the code runs from (None
     outside git), "packages": {distribution: version} of every installed one, "jax":
     {"backend", "process_count", "devices"} (None where the run does not start JAX's backend),
     "environment_variables" (JAX_*, XLA_*, CUDA_*, TPU_*), "config", ...extra}

A directory's env.json is a list with one such record per run that started in it (a resumed
trial or sweep adds one), oldest first.
"""
import datetime
import functools
import importlib.metadata
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys

from rnn_research.database import masked_argument
from rnn_research.workdir import write_at_once

ENV_FILE = "env.json"
CODE_ROOT = pathlib.Path(__file__).resolve().parents[1]  # the checkout holding rnn_research/
ENVIRONMENT_PREFIXES = ("JAX_", "XLA_", "CUDA_", "TPU_")


def environment(config: dict | None = None, *, devices: bool = True, **extra) -> dict:
  """This process's environment (see the module docstring) with `config` and `extra`. With
  `devices=False` JAX's backend is not started (a launcher must leave the accelerators to its
  workers), and "jax" is None."""
  return {
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": [masked_argument(a) for a in sys.argv],
      "python": sys.version.split()[0],
      "executable": sys.executable,
      "platform": platform.platform(),
      "host": socket.gethostname(),
      "git": code_revision(),
      "packages": package_versions(),
      "jax": jax_devices() if devices else None,
      "environment_variables": {k: v for k, v in sorted(os.environ.items())
                                if k.startswith(ENVIRONMENT_PREFIXES)},
      "config": config,
      **extra,
  }


def record(directory, config: dict | None = None, *, devices: bool = True, **extra) -> dict:
  """Appends this run's `environment(config, devices=devices, **extra)` to directory/env.json
  and returns it."""
  path = pathlib.Path(directory) / ENV_FILE
  runs = json.loads(path.read_text()) if path.exists() else []
  runs.append(environment(config, devices=devices, **extra))
  write_at_once(path, json.dumps(runs, indent=1, default=str))
  return runs[-1]


def git_state(directory) -> dict | None:
  """{"root", "revision", "dirty"} of the git work tree holding `directory` ("dirty": a tracked
  file differs from the revision); None outside a work tree or without git."""
  def git(*args) -> str:
    return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
  try:
    return {"root": git("rev-parse", "--show-toplevel"), "revision": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
  except (OSError, subprocess.SubprocessError):  # no git, not a work tree, git refused
    return None


@functools.cache
def code_revision() -> dict | None:
  """`git_state` of the checkout rnn_research runs from; None when it is installed (in a work
  tree or not, it is then not the one the package came from). Once per process: the code it
  loaded is the code at its start."""
  state = git_state(CODE_ROOT)
  return state if state and pathlib.Path(state["root"]).resolve() == CODE_ROOT else None


@functools.cache
def package_versions() -> dict[str, str]:
  """{distribution name: version} of every installed distribution (as `pip freeze`)."""
  return dict(sorted((d.name, d.version) for d in importlib.metadata.distributions()
                     if d.name))


def jax_devices() -> dict:
  """JAX's backend, process count and devices (starting the backend)."""
  import jax  # pylint: disable=g-import-not-at-top
  return {"version": jax.__version__, "backend": jax.default_backend(),
          "process_count": jax.process_count(),
          "devices": [{"id": d.id, "kind": d.device_kind, "process": d.process_index}
                      for d in jax.devices()]}
