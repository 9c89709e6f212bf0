"""LSTM and GRU layers on one GPU: the Pallas whole-sequence kernel, the persistent Mosaic GPU
kernel, the Pallas step kernel in a scan, this library's scan path, Flax's nnx.RNN, cuDNN from
JAX (jax_cudnn: the layers' backend="cudnn", jax.experimental.rnn; the LSTM in float32 only,
its error recorded otherwise) and PyTorch's cuDNN nn.LSTM/nn.GRU in bf16 and fp16 (fp16 is
where cuDNN runs its persistent algorithm), forward and forward+backward, interleaved in one
process.

    python -m benchmarks.kernels       # writes benchmarks/results/kernels.{json,md}
    python -m benchmarks.kernels --batch=16 --hidden=256 --time=100 --reps=10   # a quick look
    python -m benchmarks.kernels --dry_run    # on a CPU: lowers every JAX configuration for an
                                              # H100 (cuda), times nothing, writes nothing

Needs a GPU (torch is optional: without it the cudnn rows are left out). Before timing, every
implementation of this library (pallas_seq, pallas_persistent, pallas_step, scan) is checked
against cuDNN's output and gradients on the same weights (against the scan path in float32
without torch); a configuration an implementation cannot run (the whole-sequence kernel when
the recurrent weights do not fit on chip, the persistent kernel where it does not support the
size) is recorded with its error instead of a time. Flax's LSTM gets cuDNN's weights and is
checked too; its GRU has its own parametrisation, and JAX's cuDNN LSTM its own weights: they
are only timed. The cells are the PyTorch-compatible ones: LSTM "NP" (no peepholes) and GRU
reset_after=True; in_features = hidden.

Anchors (H100, LSTM hidden 768, batch 16, time 1024; FlashRNN's paper): cuDNN fp16 2.01 ms
forward, 5.19 ms fwd+bwd; FlashRNN 4.87 / 13.61 ms.
"""
import argparse
import datetime
import functools
import importlib.metadata
import os
import pathlib
import statistics
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave memory to torch

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import write_json  # noqa: E402
from rnn_research.cells import GRUDef, LSTMDef, PRESETS  # noqa: E402
from rnn_research.layers import recurrence, run  # noqa: E402
from rnn_research.torch_weights import params_from_torch  # noqa: E402

IMPLS = ("pallas_seq", "pallas_persistent", "pallas_step", "scan", "flax", "jax_cudnn",
         "cudnn", "cudnn_fp16")
PALLAS_IMPLS = {"pallas_seq": "sequence", "pallas_persistent": "persistent",
                "pallas_step": "step"}
TORCH_DTYPES = {"cudnn": None, "cudnn_fp16": "float16"}  # None: the benchmark's dtype
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16, NVIDIA's figure
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


def parse_args():
  ints = lambda s: [int(v) for v in s.split(",")]
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cells", default="lstm,gru")
  p.add_argument("--batch", type=ints, default=[16, 64])
  p.add_argument("--hidden", type=ints, default=[256, 512, 768, 1024])
  p.add_argument("--time", type=ints, default=[100, 1024])
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  p.add_argument("--impls", default=",".join(IMPLS))
  p.add_argument("--reps", type=int, default=30)
  p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "kernels"))
  p.add_argument("--dry_run", action="store_true",
                 help="lower every JAX configuration for an H100 on this machine; no timing")
  return p.parse_args()


def make_cell(kind, hidden):
  return LSTMDef(hidden, hidden, PRESETS["NP"]) if kind == "lstm" else GRUDef(hidden, hidden)


def torch_or_none():
  try:
    import torch
  except ImportError:
    return None
  return torch if torch.cuda.is_available() else None


class Torch:
  """nn.LSTM / nn.GRU on cuDNN; torch's half types for bf16 where cuDNN has them."""

  def __init__(self, torch, kind, hidden, dtype):
    self.torch = torch
    torch.manual_seed(0)
    module = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    self.dtype = getattr(torch, dtype)
    self.module = module(hidden, hidden, batch_first=True).cuda().to(self.dtype)
    self.state_dict = {k: v.float().cpu().numpy() for k, v in self.module.state_dict().items()}

  def prepare(self, xs, dys, backward):
    """A call on these inputs, copied to the GPU once, outside the timing."""
    x, dy = self._tensor(xs), self._tensor(dys)
    x.requires_grad_(backward)
    return lambda: self._run(x, dy, backward) and None

  def _tensor(self, a):
    return self.torch.as_tensor(np.asarray(a, np.float32)).cuda().to(self.dtype)

  def _run(self, x, dy, backward):
    self.module.zero_grad(set_to_none=True)
    ys, _ = self.module(x)
    if backward:
      ys.backward(dy)
    self.torch.cuda.synchronize()
    return ys

  def outputs(self, xs, dys):
    """(ys, dxs) in float32 NumPy."""
    x = self._tensor(xs).requires_grad_()
    ys = self._run(x, self._tensor(dys), True)
    return ys.detach().float().cpu().numpy(), x.grad.float().cpu().numpy()


def jax_fns(impl, cell, kind, params, dtype, state_dict=None, **kernel_options):
  """(forward(xs) -> ys, forward+backward(xs, dys) -> (ys, dxs, dparams)), jitted. Flax's
  LSTM takes PyTorch's weights from `state_dict` when given (the same gate order);
  `kernel_options` go to the Pallas kernels (platform, interpret)."""
  if impl == "flax":
    make = nnx.OptimizedLSTMCell if kind == "lstm" else nnx.GRUCell
    model = nnx.RNN(make(cell.in_features, cell.hidden_size, dtype=dtype, param_dtype=dtype,
                         rngs=nnx.Rngs(0)))
    if kind == "lstm" and state_dict is not None:
      model.cell.dense_i.kernel[...] = jnp.asarray(state_dict["weight_ih_l0"].T, dtype)
      model.cell.dense_h.kernel[...] = jnp.asarray(state_dict["weight_hh_l0"].T, dtype)
      model.cell.dense_h.bias[...] = jnp.asarray(
          state_dict["bias_ih_l0"] + state_dict["bias_hh_l0"], dtype)
    graph, params, rest = nnx.split(model, nnx.Param, ...)

    def layer(p, xs):
      h = jnp.zeros((xs.shape[0], cell.hidden_size), dtype)
      return nnx.merge(graph, p, rest)(xs, initial_carry=(h, h) if kind == "lstm" else h)
  else:
    pallas_impl = PALLAS_IMPLS.get(impl)
    backend = "cudnn" if impl == "jax_cudnn" else "scan"

    def layer(p, xs):
      if pallas_impl is None:
        return run(cell, p, xs, backend=backend)[0]
      xp = cell.input_projection(p, jnp.swapaxes(xs, 0, 1))
      carry0 = cell.initial_carry((xs.shape[0],), xs.dtype)
      return jnp.swapaxes(recurrence(cell, p, xp, carry0, backend="pallas", impl=pallas_impl,
                                     **kernel_options)[1], 0, 1)

  def fwdbwd(p, xs, dys):
    ys, vjp = jax.vjp(layer, p, xs)
    dp, dxs = vjp(dys)
    return ys, dxs, dp

  # params are arguments, not closed over: Flax's Variables must enter jit as inputs
  forward, backward = jax.jit(layer), jax.jit(fwdbwd)
  return functools.partial(forward, params), functools.partial(backward, params)


def dry_run(args):
  """Lowers forward and forward+backward of every JAX implementation and configuration for an
  H100 (no GPU needed) -> rows with "lowered" or the error."""
  from jax.sharding import AbstractDevice, AbstractMesh
  h100 = AbstractMesh((1,), ("x",), abstract_device=AbstractDevice(
      device_kind="NVIDIA H100", num_cores=132, platform="cuda"))
  dtype = jnp.dtype(args.dtype)
  rows = []
  for kind in args.cells.split(","):
    for batch in args.batch:
      for hidden in args.hidden:
        for steps in args.time:
          cell = make_cell(kind, hidden)
          params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype),
                                jax.eval_shape(cell.init_params, jax.random.key(0)))
          xs = jax.ShapeDtypeStruct((batch, steps, hidden), dtype)
          for impl in [i for i in args.impls.split(",") if i not in ("flax", *TORCH_DTYPES)]:
            row = dict(cell=kind, batch=batch, hidden=hidden, time=steps, impl=impl)
            try:
              forward, backward = jax_fns(impl, cell, kind, params, dtype, platform="gpu",
                                          interpret=False)
              with jax.sharding.use_abstract_mesh(h100):
                for call, call_args in ((forward, (xs,)), (backward, (xs, xs))):
                  call.func.trace(*call.args, *call_args).lower(lowering_platforms=("cuda",))
              row["lowered"] = True
            except Exception as e:  # noqa: BLE001  (reported, not fatal)
              row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
            print(row, flush=True)
  return rows


def rel_err(out, ref):
  out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def timed_ms(call):
  start = time.perf_counter()
  jax.block_until_ready(call())
  return (time.perf_counter() - start) * 1e3


def floor_ms(device, kind, batch, hidden, steps, backward):
  """FLOPs of the input and recurrent matmuls at the device's peak (fwd+bwd ≈ 3x)."""
  peak = next((v for k, v in PEAK_FLOPS.items() if k in device), None)
  if peak is None:
    return None
  gates = 4 if kind == "lstm" else 3
  flops = 2 * steps * batch * 2 * hidden * gates * hidden * (3 if backward else 1)
  return flops / peak * 1e3


def benchmark(args, kind, batch, hidden, steps, torch, device):
  """Rows for one configuration: every implementation checked, then timed interleaved."""
  dtype = jnp.dtype(args.dtype)
  cell = make_cell(kind, hidden)
  rng = np.random.default_rng(0)
  inputs = [(jnp.asarray(rng.standard_normal((batch, steps, hidden)), dtype),
             jnp.asarray(rng.standard_normal((batch, steps, hidden)), dtype)) for _ in range(3)]
  impls = [i for i in args.impls.split(",") if i not in TORCH_DTYPES or torch is not None]
  calls, rows, errors, tor, torches = {}, [], {}, None, {}
  xs, dys = inputs[0]
  for impl in [i for i in impls if i in TORCH_DTYPES]:
    try:
      torches[impl] = Torch(torch, kind, hidden, TORCH_DTYPES[impl] or args.dtype)
      if impl == "cudnn":
        tor = torches[impl]
        ref_ys, ref_dxs = tor.outputs(xs, dys)
    except Exception as e:  # noqa: BLE001  (recorded in the results, not fatal)
      errors[impl] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      torches.pop(impl, None)
      impls.remove(impl)
  tor = torches.get("cudnn")
  params32 = (params_from_torch(cell, tor.state_dict) if tor else
              cell.init_params(jax.random.key(0)))
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params32)
  if not tor:
    f32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
    ref_ys, ref_dxs, _ = jax_fns("scan", cell, kind, f32(params), jnp.float32)[1](f32(xs),
                                                                                 f32(dys))

  for impl in impls:
    try:
      if impl in TORCH_DTYPES:
        calls[impl] = {p: [torches[impl].prepare(x, dy, p == "fwdbwd") for x, dy in inputs]
                       for p in ("fwd", "fwdbwd")}
        continue
      forward, backward = jax_fns(impl, cell, kind, params, dtype,
                                  tor.state_dict if tor else None)
      ys, dxs, _ = jax.block_until_ready(backward(xs, dys))
      if impl != "flax" or (kind == "lstm" and tor):
        err = max(rel_err(ys, ref_ys), rel_err(dxs, ref_dxs))
        if not err < TOLERANCE[args.dtype]:
          raise AssertionError(f"output/gradient relative error {err:.2e} vs the reference")
      calls[impl] = {"fwd": [functools.partial(forward, x) for x, _ in inputs],
                     "fwdbwd": [functools.partial(backward, x, dy) for x, dy in inputs]}
    except Exception as e:  # noqa: BLE001  (recorded in the results, not fatal)
      errors[impl] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"

  for pass_ in ("fwd", "fwdbwd"):
    times = {impl: [] for impl in calls}
    for impl in calls:  # warm-up: compilation, autotuning, allocation
      timed_ms(calls[impl][pass_][0])
    for rep in range(args.reps):  # interleaved (A B C A B C ...), rotating the input sets
      for impl in calls:
        times[impl].append(timed_ms(calls[impl][pass_][rep % len(inputs)]))
    base = dict(cell=kind, variant="NP" if kind == "lstm" else "reset_after", batch=batch,
                hidden=hidden, time=steps, dtype=args.dtype, **{"pass": pass_})
    floor = floor_ms(device, kind, batch, hidden, steps, pass_ == "fwdbwd")
    for impl, t in times.items():
      rows.append(dict(base, impl=impl, median_ms=statistics.median(t), min_ms=min(t),
                       max_ms=max(t), reps=len(t), floor_ms=floor))
    rows += [dict(base, impl=impl, error=message) for impl, message in errors.items()]
  return rows


def markdown(result):
  """One line per configuration and pass: median ms per implementation and ratios."""
  impls = [i for i in IMPLS if any(r["impl"] == i for r in result["rows"])]
  head = (f"Kernels on {result['device']} (jax {result['jax']}, {result['date']}); median ms "
          f"over {result['rows'][0].get('reps', '?')} reps; `-` = could not run.\n\n")
  table = ["| cell | batch | hidden | time | pass | " + " | ".join(impls)
           + " | seq/cudnn | scan/seq |", "|" + "---|" * (len(impls) + 7)]
  keys = sorted({(r["cell"], r["batch"], r["hidden"], r["time"], r["pass"])
                 for r in result["rows"]})
  for key in keys:
    got = {r["impl"]: r.get("median_ms") for r in result["rows"]
           if (r["cell"], r["batch"], r["hidden"], r["time"], r["pass"]) == key}
    ratio = lambda a, b: f"{got[a] / got[b]:.2f}" if got.get(a) and got.get(b) else "-"
    cells = [f"{got[i]:.3f}" if got.get(i) else "-" for i in impls]
    table.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells)
                 + f" | {ratio('pallas_persistent', 'cudnn_fp16')} | "
                 + f"{ratio('pallas_seq', 'cudnn')} | {ratio('scan', 'pallas_seq')} |")
  return head + "\n".join(table) + "\n"


def main():
  args = parse_args()
  if args.dry_run:
    rows = dry_run(args)
    failed = [r for r in rows if "error" in r]
    print(f"{len(rows) - len(failed)} of {len(rows)} lowered; failed: {failed}")
    return
  torch = torch_or_none()
  device = jax.devices()[0].device_kind
  rows = []
  for kind in args.cells.split(","):
    for batch in args.batch:
      for hidden in args.hidden:
        for steps in args.time:
          rows += benchmark(args, kind, batch, hidden, steps, torch, device)
          print(f"{kind} B={batch} H={hidden} T={steps} done", flush=True)
  result = {"benchmark": "kernels", "command": "python -m benchmarks.kernels "
            + " ".join(f"--{k}={v if not isinstance(v, list) else ','.join(map(str, v))}"
                       for k, v in vars(args).items() if k != "out"),
            "device": device, "platform": jax.default_backend(), "jax": jax.__version__,
            "jaxlib": importlib.metadata.version("jaxlib"),
            "torch": torch.__version__ if torch else None,
            "cudnn": torch.backends.cudnn.version() if torch else None,
            "date": datetime.date.today().isoformat(), "rows": rows}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  write_json(out.with_suffix(".json"), result, vars(args))
  out.with_suffix(".md").write_text(markdown(result))
  print(markdown(result))


if __name__ == "__main__":
  main()
