"""How a sweep on one machine uses its CPU cores (measured: benchmarks/sweep_throughput.py).

A trial of the Odyssey protocol (an update per sequence) runs small matmuls one after another,
which XLA's threads cannot split profitably: one single-threaded worker process per core, each
training its own pack, gets through more trials per hour than one process using every core for
one pack of the same trials (benchmarks/results/sweep_throughput.md). The workers share JAX's
persistent compilation cache, so a program that several of them need is compiled once
(`rnn_research.compilation`).
"""
import contextlib
import os
import threading
import time

SINGLE_THREADED_XLA = "--xla_cpu_multi_thread_eigen=false"


def available_cores() -> list[int]:
  """The cores this process may run on (its affinity: SLURM and taskset restrict it)."""
  return sorted(os.sched_getaffinity(0))


def default_workers() -> int:
  """Worker processes of a local sweep: one per core."""
  return len(available_cores())


def worker_environment(workers: int, cache_dir: str) -> dict:
  """Environment variables of the worker processes of a sweep of `workers` workers: XLA's CPU
  threading off when there is no more than one core per worker; JAX's persistent compilation
  cache in `cache_dir` unless the user has chosen one, keeping every program (the small ones
  that build a model too: a later pack of the same shapes starts at once)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if workers >= len(available_cores()) and SINGLE_THREADED_XLA not in flags:
    flags = f"{flags} {SINGLE_THREADED_XLA}".strip()
  return {"XLA_FLAGS": flags,
          "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", cache_dir),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def pin(pid: int, index: int, workers: int) -> None:
  """Pins process `pid`, worker `index` of `workers`, to a core of its own when there is one
  per worker."""
  cores = available_cores()
  if workers == len(cores):
    os.sched_setaffinity(pid, {cores[index]})


@contextlib.contextmanager
def environment(variables: dict):
  """`os.environ` with `variables` set while in the block: processes started in it (spawned
  workers) inherit them, before their imports read them."""
  saved = {name: os.environ.get(name) for name in variables}
  os.environ.update(variables)
  try:
    yield
  finally:
    for name, value in saved.items():
      if value is None:
        del os.environ[name]
      else:
        os.environ[name] = value


def exit_with_parent(parent: int, poll: float = 2.0) -> None:
  """Ends this process (exit status 1) as soon as its parent `parent` is gone: a worker whose
  launcher was killed stops, instead of training on beside the next launcher's workers (which
  retry its trials from their checkpoints). Checked every `poll` seconds by a daemon thread."""
  def watch():
    while os.getppid() == parent:
      time.sleep(poll)
    os._exit(1)  # pylint: disable=protected-access
  threading.Thread(target=watch, daemon=True, name="exit_with_parent").start()
