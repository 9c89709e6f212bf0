"""Compiling a program once for all the processes that need it.

The workers of a local sweep often need the same programs (packs of one variant and size, their
evaluation). With JAX's persistent compilation cache on (`jax_compilation_cache_dir`, set by
`launch.local`), a lock named by a program's hash lets one process compile it while the others
wait and then load it from the cache (`compile_shared`); `precompile` shares a list of programs
out, each process first compiling those that no other process is compiling. `PerShape` holds a
jitted function's programs, one per shape of its inputs.
"""
import hashlib
import pathlib

import jax

from rnn_research.filelock import file_lock


def _lock_path(lowered: jax.stages.Lowered) -> pathlib.Path | None:
  """The lock of `lowered`'s program, or None without a local persistent cache."""
  cache_dir = jax.config.jax_compilation_cache_dir
  if not cache_dir or "://" in cache_dir:
    return None
  locks = pathlib.Path(cache_dir) / "locks"
  locks.mkdir(parents=True, exist_ok=True)
  return locks / hashlib.sha256(lowered.as_text().encode()).hexdigest()


def compile_shared(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
  """`lowered.compile()`, or the program another process compiled meanwhile, taken from the
  persistent cache."""
  path = _lock_path(lowered)
  if path is None:
    return lowered.compile()
  with file_lock(path):
    return lowered.compile()


def _signature(tree) -> tuple:
  leaves, structure = jax.tree.flatten(tree)
  return structure, tuple((tuple(leaf.shape), leaf.dtype) for leaf in leaves)


class PerShape:
  """`jax.jit(fn, **jit_options)`, compiled ahead of time (`compile_shared`) for each shape of
  the argument at `shape_argnum`; the other arguments' shapes must not change. The argument
  may be abstract (`jax.ShapeDtypeStruct` leaves) in `precompile`."""

  def __init__(self, fn, shape_argnum: int, **jit_options):
    self._jitted = jax.jit(fn, **jit_options)
    self._shape_argnum = shape_argnum
    self.compiled = {}

  def key(self, args) -> tuple:
    return _signature(args[self._shape_argnum])

  def lower(self, *args) -> jax.stages.Lowered:
    return self._jitted.lower(*args)

  def __call__(self, *args):
    key = self.key(args)
    compiled = self.compiled.get(key)
    if compiled is None:
      compiled = self.compiled[key] = compile_shared(self.lower(*args))
    return compiled(*args)


def precompile(calls) -> None:
  """Compiles the program of each (PerShape, args) of `calls` not compiled yet, sharing the
  work with other processes that compile the same programs now: first those that no other
  process is compiling, then the others, from the cache once they are done."""
  todo = {}
  for function, args in calls:
    key = function.key(args)
    if key not in function.compiled and (id(function), key) not in todo:
      todo[id(function), key] = (function, key, function.lower(*args))
  deferred = []
  for function, key, lowered in todo.values():
    path = _lock_path(lowered)
    if path is None:
      function.compiled[key] = lowered.compile()
      continue
    with file_lock(path, blocking=False) as free:
      if free:
        function.compiled[key] = lowered.compile()
      else:
        deferred.append((function, key, lowered))
  for function, key, lowered in deferred:
    function.compiled[key] = compile_shared(lowered)
