"""Programs compiled once for every process that needs them (rnn_research.compilation), and the
layout of a local sweep's workers (launch/cores.py)."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

from launch import cores
from rnn_research import compilation

PRECOMPILE = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from rnn_research import compilation
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
f = compilation.PerShape(lambda x: jnp.cumsum(jnp.sin(x) * jnp.arange(x.shape[0])), 0)
inputs = [np.linspace(0, 1, n) for n in (30, 40, 50)]
compilation.precompile([(f, (x,)) for x in inputs])
loaded = len(hits)  # before other programs run
print(json.dumps({"hits": loaded, "sums": [np.asarray(f(x)).tolist() for x in inputs]}))
"""


def test_per_shape_compiles_once_per_shape_and_computes_what_jit_does():
  f = compilation.PerShape(lambda x, y: jnp.tanh(x) @ y, 0)
  for n in (3, 4, 3):
    x, y = np.linspace(-1, 1, 2 * n).reshape(2, n), np.ones((n, 2))
    np.testing.assert_allclose(f(x, y), jnp.tanh(x) @ y, rtol=1e-12)
  assert len(f.compiled) == 2


def test_processes_share_the_programs_they_all_need(tmp_path):
  """Two processes precompiling the same three programs with one persistent cache: each
  program is compiled once, the other process loads it from the cache."""
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  processes = [subprocess.Popen([sys.executable, "-c", PRECOMPILE], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
  outputs = [json.loads(p.communicate(timeout=300)[0]) for p in processes]
  assert [p.returncode for p in processes] == [0, 0]
  assert sum(o["hits"] for o in outputs) == 3  # 2 x 3 programs needed, 3 compiled
  assert outputs[0]["sums"] == outputs[1]["sums"]


def test_a_worker_per_core_runs_single_threaded(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  one_per_core = cores.worker_environment(cores.default_workers(), "/sweep/jax_cache")
  assert one_per_core["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                       + cores.SINGLE_THREADED_XLA)
  assert one_per_core["JAX_COMPILATION_CACHE_DIR"] == "/sweep/jax_cache"
  if cores.default_workers() > 1:
    shared = cores.worker_environment(1, "/sweep/jax_cache")["XLA_FLAGS"]
    assert cores.SINGLE_THREADED_XLA not in shared
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/mine")  # the user's choice stays
  assert cores.worker_environment(1, "/sweep/jax_cache")["JAX_COMPILATION_CACHE_DIR"] == "/mine"


def test_environment_is_restored_after_the_workers_start(monkeypatch):
  monkeypatch.setenv("RNN_RESEARCH_A", "before")
  monkeypatch.delenv("RNN_RESEARCH_B", raising=False)
  with cores.environment({"RNN_RESEARCH_A": "during", "RNN_RESEARCH_B": "during"}):
    assert os.environ["RNN_RESEARCH_A"] == os.environ["RNN_RESEARCH_B"] == "during"
  assert os.environ["RNN_RESEARCH_A"] == "before" and "RNN_RESEARCH_B" not in os.environ
