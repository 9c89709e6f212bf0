"""One LSTM layer on the CPU: this library's scan path vs Flax's nnx.RNN(OptimizedLSTMCell) vs
PyTorch's nn.LSTM (oneDNN), forward and forward+backward, interleaved in one run.

    python -m benchmarks.rnn_cpu --torch_python=python3.11      # writes benchmarks/results/rnn_cpu.{json,md}

A third pass, `step_matmuls`, times the forward time loop's matmuls alone (`time` dependent
h @ R, [batch, hidden] x [hidden, 4 hidden], through tanh) in XLA (a jitted fori_loop) and in
PyTorch (torch.mm in a Python loop): how much of the layer's gap is the small matmul itself;
and `step_pointwise` (this library only) the rest of the forward loop without that matmul: the
NP LSTM's gate math on precomputed input projections, the loop and each step's stored output.

PyTorch runs in its own interpreter (`--torch_python`, which must import torch; the project's
Python 3.12 environment need not have it), driven over a pipe; it times each call itself, so the
pipe costs nothing. Before timing, every implementation's output (and gradients) are checked
against PyTorch's with the same weights.
"""
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from benchmarks.common import cpu_name, main_flags, write_json
from rnn_research.cells import LSTMDef, lstm_spec
from rnn_research.layers import run
from rnn_research.torch_weights import params_from_torch

FLAGS = flags.FLAGS
flags.DEFINE_string("torch_python", "python3.11", "A Python interpreter that has torch.")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("time", 100, "Sequence length.")
flags.DEFINE_integer("in_features", 128, "Input size.")
flags.DEFINE_integer("hidden", 256, "Hidden size.")
flags.DEFINE_integer("reps", 30, "Timed calls per implementation and pass.")
flags.DEFINE_string("out", str(pathlib.Path(__file__).parent / "results" / "rnn_cpu"),
                    "Output path without extension.")


class TorchWorker:
  """nn.LSTM in a subprocess (see torch_worker.py)."""

  def __init__(self, python: str):
    self.process = subprocess.Popen([python, str(pathlib.Path(__file__).with_name("torch_worker.py"))],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def ask(self, **command):
    self.process.stdin.write(json.dumps(command) + "\n")
    self.process.stdin.flush()
    return json.loads(self.process.stdout.readline())

  def close(self):
    self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
    self.process.stdin.close()
    self.process.wait()


def rel_err(out, ref):
  return float(np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref))


def jax_implementations(golden):
  """{impl: (forward, forward+backward)} jitted on this library's layer and on Flax's."""
  state_dict = {k[3:]: v for k, v in golden.items() if k.startswith("sd/")}
  cell = LSTMDef(FLAGS.in_features, FLAGS.hidden, lstm_spec("NP"))
  params = params_from_torch(cell, state_dict)
  weights = jnp.asarray(golden["weights"])

  def ours(params, x):
    return run(cell, params, x)[0]

  flax_rnn = nnx.RNN(nnx.OptimizedLSTMCell(FLAGS.in_features, FLAGS.hidden, rngs=nnx.Rngs(0)),
                     rngs=False)
  # Flax's fused kernels are PyTorch's transposed (gate order i, f, g, o), one bias on dense_h.
  flax_rnn.cell.dense_i.kernel[...] = state_dict["weight_ih_l0"].T
  flax_rnn.cell.dense_h.kernel[...] = state_dict["weight_hh_l0"].T
  flax_rnn.cell.dense_h.bias[...] = state_dict["bias_ih_l0"] + state_dict["bias_hh_l0"]
  graph, flax_params, rest = nnx.split(flax_rnn, nnx.Param, ...)

  def flax(params, x):
    zeros = jnp.zeros((x.shape[0], FLAGS.hidden), x.dtype)
    return nnx.merge(graph, params, rest)(x, initial_carry=(zeros, zeros))

  impls = {}
  for name, fn, p in (("scan", ours, params), ("flax", flax, flax_params)):
    loss = lambda p, x, fn=fn: jnp.sum(fn(p, x) * weights)
    impls[name] = (p, jax.jit(fn), jax.jit(jax.grad(loss, argnums=(0, 1))))
  return impls


def step_matmuls(params):
  """(jitted (R, h0) -> h_T of the time loop's matmuls alone, R, h0)."""
  def chain(recurrent, h0):
    body = lambda t, h: jnp.tanh(h @ recurrent)[:, :FLAGS.hidden]
    return jax.lax.fori_loop(0, FLAGS.time, body, h0)
  return jax.jit(chain), params["R"], jnp.zeros((FLAGS.batch, FLAGS.hidden), jnp.float32)


def step_pointwise():
  """(jitted xw [T, B, 4H] -> hs [T, B, H], xw): the forward loop without its matmul (h tiled
  to the gates' width in place of h @ R)."""
  steps, batch, hidden = FLAGS.time, FLAGS.batch, FLAGS.hidden

  def loop(xw):
    def body(t, carry):
      c, h, hs = carry
      i, f, g, o = jnp.split(xw[t] + jnp.tile(h, 4), 4, axis=-1)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return c, h, hs.at[t].set(h)
    zeros = jnp.zeros((batch, hidden), jnp.float32)
    return jax.lax.fori_loop(0, steps, body, (zeros, zeros, jnp.zeros((steps, batch, hidden))))[2]
  return jax.jit(loop), jax.random.normal(jax.random.key(0), (steps, batch, 4 * hidden))


def check(impls, golden):
  """Relative errors of each implementation against PyTorch: outputs and input gradients."""
  x = jnp.asarray(golden["x"])
  errors = {}
  for name, (params, fwd, fwdbwd) in impls.items():
    _, grad_x = fwdbwd(params, x)
    errors[name] = {"y": rel_err(fwd(params, x), golden["y"]),
                    "grad_x": rel_err(grad_x, golden["grad_x"])}
    assert max(errors[name].values()) < 1e-4, (name, errors[name])
  return errors


def time_once(fn, *args):
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return 1e3 * (time.perf_counter() - start)


def main(argv):
  del argv
  worker = TorchWorker(FLAGS.torch_python)
  with tempfile.TemporaryDirectory() as tmp:
    setup = worker.ask(op="setup", batch=FLAGS.batch, time=FLAGS.time,
                       in_features=FLAGS.in_features, hidden=FLAGS.hidden, seed=0,
                       path=f"{tmp}/golden.npz")
    golden = dict(np.load(f"{tmp}/golden.npz"))
  impls = jax_implementations(golden)
  errors = check(impls, golden)
  x = jnp.asarray(golden["x"])
  parts = {"step_matmuls": step_matmuls(impls["scan"][0]), "step_pointwise": step_pointwise()}
  passes = ("fwd", "fwdbwd", "step_matmuls", "step_pointwise")
  samples = {(impl, p): [] for impl in (*impls, "torch_cpu") for p in passes
             if p not in parts or impl == "scan" or (impl, p) == ("torch_cpu", "step_matmuls")}
  for fn, *args in parts.values():
    jax.block_until_ready(fn(*args))
  for _ in range(3):  # warm-up: compilation, allocation
    for p in passes[:3]:
      worker.ask(op="time", **{"pass": p})
  for _ in range(FLAGS.reps):  # interleaved: A B C A B C ...
    for p in passes:
      if p in parts:
        samples["scan", p].append(time_once(*parts[p]))
      else:
        for impl, (params, fwd, fwdbwd) in impls.items():
          samples[impl, p].append(time_once(fwd if p == "fwd" else fwdbwd, params, x))
      if ("torch_cpu", p) in samples:
        samples["torch_cpu", p].append(worker.ask(op="time", **{"pass": p})["ms"])
  worker.close()

  rows = []
  for (impl, p), ms in samples.items():
    rows.append({"cell": "lstm", "variant": "NP", "impl": impl, "batch": FLAGS.batch,
                 "hidden": FLAGS.hidden, "in_features": FLAGS.in_features, "time": FLAGS.time,
                 "dtype": "float32", "pass": p, "median_ms": float(np.median(ms)),
                 "min_ms": float(np.min(ms)), "max_ms": float(np.max(ms)), "reps": len(ms)})
  medians = {(r["impl"], r["pass"]): r["median_ms"] for r in rows}
  ratios = {f"{impl}/torch_cpu {p}": medians[impl, p] / medians["torch_cpu", p]
            for impl, p in medians if impl != "torch_cpu" and ("torch_cpu", p) in medians}
  result = {"benchmark": "rnn_cpu", "command": "python -m benchmarks.rnn_cpu " + " ".join(sys.argv[1:]),
            "device": cpu_name(), "platform": "cpu",
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__, "torch": setup["torch"], "torch_threads": setup["threads"],
            "date": datetime.date.today().isoformat(), "errors_vs_torch": errors,
            "ratios": ratios, "rows": rows}
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  write_json(out.with_suffix(".json"), result, main_flags())
  lines = ["| impl | pass | median ms | min | max | / torch_cpu |", "|---|---|---|---|---|---|"]
  for r in rows:
    ratio = ratios.get(f"{r['impl']}/torch_cpu {r['pass']}", 1.0 if r["impl"] == "torch_cpu"
                       else None)
    lines.append(f"| {r['impl']} | {r['pass']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
                 f"{r['max_ms']:.1f} | {'–' if ratio is None else f'{ratio:.2f}'} |")
  header = (f"LSTM layer, batch {FLAGS.batch}, time {FLAGS.time}, input {FLAGS.in_features}, "
            f"hidden {FLAGS.hidden}, float32, CPU ({result['cpu_count']} cores), jax "
            f"{jax.__version__}, torch {setup['torch']}, {result['date']}.\n\n")
  out.with_suffix(".md").write_text(header + "\n".join(lines) + "\n")
  print(header + "\n".join(lines))


if __name__ == "__main__":
  app.run(main)
