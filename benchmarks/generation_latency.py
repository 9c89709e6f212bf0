"""Generation latency per token against position, for every backbone of the comparison study at
one matched parameter count, in one run, interleaved.

    python -m benchmarks.generation_latency   # benchmarks/results/generation_latency.{json,md}

A step is `decoding.decode_step` of a backbone of the JSB model (88 inputs; width matched to
--params with the study's configs), jitted, timed with the state a sequence has after
`position` steps: the recurrent carries, the TCN's buffers and the MLP's window have one size
at every position; the Transformer's key/value cache holds exactly `position` steps, as a cache
that grows with the sequence does (the sampling loop's fixed-capacity cache costs its capacity
at every step). Before timing, each backbone's step is checked against its full forward pass
over the same inputs. The Markdown table quotes each backbone's latency as a ratio to its own
latency at the first position (absolute CPU times vary with the machine).
"""
import datetime
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx

from benchmarks.common import cpu_name, main_flags, write_json
from experiments.rnn_vs_transformer import BACKBONES, tcn_blocks
from rnn_research.backbones import complete, make_backbone
from rnn_research.generation import decoding
from rnn_research.backbones.sizing import match_width
from rnn_research.backbones.transformer import width_step

FLAGS = flags.FLAGS
flags.DEFINE_integer("params", 200_000, "Parameters of every backbone (the width is matched).")
flags.DEFINE_list("positions", ["1", "16", "64", "256", "1024", "4096"], "Positions to time at.")
flags.DEFINE_integer("batch", 1, "Sequences decoded at once.")
flags.DEFINE_integer("reps", 100, "Timed steps per backbone and position.")
flags.DEFINE_string("out", str(pathlib.Path(__file__).parent / "results" / "generation_latency"),
                    "Output path without extension.")
IN_FEATURES = 88


def backbone_config(name: str, positions: list[int]) -> ml_collections.ConfigDict:
  """The study's model config of a backbone (the TCN sees the longest position), width 1."""
  config = complete({**BACKBONES[name], "hidden_size": 1})
  if name == "tcn":
    config.num_layers = tcn_blocks(max(positions) + 1, config.kernel_size)
  return config


def matched_backbone(name: str, positions: list[int]):
  config = backbone_config(name, positions)
  step = width_step(config.num_heads, config.positions) if name == "transformer" else 1

  def build(width):
    config.hidden_size = width
    return make_backbone(config, IN_FEATURES, nnx.Rngs(0))

  return build(match_width(build, FLAGS.params, step=step))


def state_at(backbone, xs, position: int):
  """The decoding state after reading xs[:, :position] (a cache of exactly that many steps)."""
  state = decoding.decode_state(backbone, xs.shape[0], position)
  return backbone(xs[:, :position], initial_carry=state)[1]


def check_step(step, backbone, xs, position: int) -> float:
  """Relative error of the step at `position` against the full forward pass's output there."""
  full = np.asarray(backbone(xs[:, :position + 1])[0][:, position])
  out = np.asarray(step(xs[:, position], state_at(backbone, xs, position))[0])
  return float(np.linalg.norm(out - full) / np.linalg.norm(full))


def main(argv):
  del argv
  positions = sorted(int(p) for p in FLAGS.positions)
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.integers(0, 2, (FLAGS.batch, max(positions) + 1, IN_FEATURES)),
                   jnp.float32)
  backbones, steps, states = {}, {}, {}
  for name in BACKBONES:
    backbone = backbones[name] = matched_backbone(name, positions)
    backbone.eval()
    graphdef, params = nnx.split(backbone)
    run = jax.jit(lambda p, x, s, g=graphdef: decoding.decode_step(nnx.merge(g, p), x, s))
    steps[name] = lambda x, s, run=run, params=params: run(params, x, s)
    error = max(check_step(steps[name], backbone, xs, p) for p in positions)
    if error > 1e-4:
      raise SystemExit(f"{name}: decode step differs from the full forward pass ({error:.2e})")
    states[name] = {p: state_at(backbone, xs, p) for p in positions}
  inputs = {p: jax.block_until_ready(xs[:, p]) for p in positions}
  for p in positions:
    for name in BACKBONES:  # warm up: compile for each state's shapes
      jax.block_until_ready(steps[name](inputs[p], states[name][p]))
  times = {(name, p): [] for name in BACKBONES for p in positions}
  for _ in range(FLAGS.reps):  # interleaved over backbones and positions: drift hits all alike
    for p in positions:
      for name in BACKBONES:
        start = time.perf_counter()
        jax.block_until_ready(steps[name](inputs[p], states[name][p]))
        times[name, p].append(1e3 * (time.perf_counter() - start))
  rows = [{"backbone": name, "width": backbones[name].output_size,
           "num_params": int(sum(a.size for a in jax.tree.leaves(nnx.state(backbones[name],
                                                                              nnx.Param)))),
           "position": p, "median_ms": float(np.median(times[name, p])),
           "min_ms": float(np.min(times[name, p])), "max_ms": float(np.max(times[name, p])),
           "reps": FLAGS.reps} for name in BACKBONES for p in positions]
  device = jax.devices()[0]
  result = {"benchmark": "generation_latency", "command": "python -m benchmarks.generation_latency",
            "device": cpu_name() if device.platform == "cpu" else device.device_kind,
            "platform": device.platform, "jax": jax.__version__,
            "date": datetime.date.today().isoformat(), "batch": FLAGS.batch,
            "params": FLAGS.params, "rows": rows}
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  write_json(out.with_suffix(".json"), result, main_flags())
  out.with_suffix(".md").write_text(markdown(result, positions))
  print(markdown(result, positions))


def markdown(result: dict, positions: list[int]) -> str:
  """Median latency per token as a ratio to the backbone's own at the first position, and the
  first position's against lstm_V's."""
  lines = [f"Generation latency per token, batch {result['batch']}, ~{result['params']:,} "
           f"parameters per backbone, {result['device']} ({result['platform']}), jax "
           f"{result['jax']}, {result['date']}.", "",
           "| backbone | width | " + " | ".join(f"pos {p}" for p in positions)
           + f" | pos {positions[0]} / lstm_V |",
           "|:---|---:|" + "---:|" * (len(positions) + 1)]
  first = {r["backbone"]: r["median_ms"] for r in result["rows"] if r["position"] == positions[0]}
  for name in first:
    rows = {r["position"]: r for r in result["rows"] if r["backbone"] == name}
    lines.append(f"| {name} | {rows[positions[0]]['width']} | "
                 + " | ".join(f"{rows[p]['median_ms'] / first[name]:.2f}" for p in positions)
                 + f" | {first[name] / first['lstm_V']:.2f} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
