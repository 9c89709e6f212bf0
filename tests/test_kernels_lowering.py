"""The kernels for real hardware, checked on a CPU: every kernel (forward and backward) lowers
for cuda (Triton) and tpu (Mosaic), and the TPU kernels run in TPU interpret mode, which
detects races and shuffles the order of the "parallel" grid axis."""
import re
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import AbstractDevice, AbstractMesh

from rnn_research.layers import recurrence
from rnn_research.cells import GRUDef, LSTMDef, PRESETS
from test_kernels import KERNEL_CASES, check_against_scan

H100 = AbstractMesh((1,), ("x",), abstract_device=AbstractDevice(
    device_kind="NVIDIA H100", num_cores=132, platform="cuda"))
CUSTOM_CALL = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}


def lowered_custom_calls(cell, platform, impl, dtype, batch=16, steps=8, options=False):
  """Lowers the gradient of a loss on the kernels' outputs; -> the custom calls in the HLO.
  options: every per-call option on (resets, a dropout mask, zoneout weights per step for
  the first state and one rate for the h of an LSTM, gradient clipping)."""
  spec = lambda shape, dt=dtype: jax.ShapeDtypeStruct(shape, dt)
  params = {k: spec(s) for k, s in cell.param_shapes().items()}
  xp = spec((steps, batch, cell.num_gates * cell.hidden_size))  # the input projection
  carry0 = jax.tree.map(lambda c: spec(c.shape), cell.initial_carry((batch,)))
  lengths = spec((batch,), jnp.int32)
  kernel_platform = "gpu" if platform == "cuda" else platform
  extras = {}
  if options:
    keep = spec((steps, batch, cell.hidden_size), jnp.float32)
    extras = dict(resets=spec((steps, batch), jnp.bool_),
                  h_mask=spec((batch, cell.output_size), jnp.float32),
                  zoneout=(keep, spec((1, 1, 1), jnp.float32)) if isinstance(cell, LSTMDef)
                  else keep)

  def grads(params, xp, carry0, lengths, extras):
    def loss(params, xp, carry0):
      final, ys = recurrence(cell, params, xp, carry0, lengths, backend="pallas",
                             platform=kernel_platform, interpret=False, impl=impl,
                             grad_clip=1.0 if options else None, **extras)
      return sum(jnp.sum(a.astype(jnp.float32)) for a in jax.tree.leaves((final, ys)))
    return jax.grad(loss, argnums=(0, 1, 2))(params, xp, carry0)

  lower = lambda: jax.jit(grads).trace(params, xp, carry0, lengths, extras).lower(
      lowering_platforms=(platform,)).as_text()
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The Pallas Triton backend is deprecated")
    if platform == "cuda":  # Triton needs a GPU to target; name one
      with jax.sharding.use_abstract_mesh(H100):
        text = lower()
    else:
      text = lower()
  return re.findall(r"custom_call @([\w$.]+)", text)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=str)
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("impl", ["sequence", "step"])
def test_lowers(case, platform, impl):
  calls = lowered_custom_calls(case.cell, platform, impl, jnp.float32)
  # forward and backward kernels (the step kernels inside their scans, once each)
  assert calls.count(CUSTOM_CALL[platform]) == 2


@pytest.mark.parametrize("cell", [LSTMDef(8, 200, PRESETS["V"], proj_size=48),
                                  GRUDef(8, 120, reset_after=False),
                                  LSTMDef(8, 96, PRESETS["FGR"])],
                         ids=["lstmp-V", "gru-cho", "lstm-FGR"])
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("impl", ["sequence", "step"])
def test_lowers_bfloat16_at_larger_sizes(cell, platform, impl):
  """bf16 (Triton wants equal operand dtypes), hidden sizes that pad, and on GPU the
  contraction chunks of the step kernel."""
  calls = lowered_custom_calls(cell, platform, impl, jnp.bfloat16, batch=24)
  assert calls.count(CUSTOM_CALL[platform]) == 2


@pytest.mark.parametrize("cell", [LSTMDef(8, 200, PRESETS["V"], layer_norm=True, cell_clip=3.0),
                                  GRUDef(8, 256, num_heads=2)],
                         ids=["lstm-LN-V-clip", "gru-heads"])
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("impl", ["sequence", "step"])
def test_lowers_with_options(cell, platform, impl):
  """Every per-call option, in bf16, with layer norm over padded lanes, and with one program
  per head (2 heads of 128 lanes, each writing its own d rprojs and d c_n)."""
  calls = lowered_custom_calls(cell, platform, impl, jnp.bfloat16, options=True)
  assert calls.count(CUSTOM_CALL[platform]) == 2


@pytest.mark.parametrize("name", ["lstm-V", "gru-reset_after=True"])
def test_tpu_interpret_sequence_kernel_with_race_detection(name, rng):
  """Two "parallel" batch blocks in random order; three time chunks carrying the state."""
  cell = next(c.cell for c in KERNEL_CASES if c.name == name)
  check_against_scan(cell, rng, 12, 5, [5, 1, 3, 5, 2, 4, 5, 5, 1, 2, 3, 4], platform="tpu",
                     interpret=pltpu.InterpretParams(detect_races=True, random_seed=7),
                     impl="sequence", block_b=8, block_t=2)


def test_tpu_interpret_step_kernel_with_race_detection(rng):
  """Batch and hidden blocks, both "parallel"."""
  check_against_scan(LSTMDef(3, 130, PRESETS["CIFG"]), rng, 9, 2, [2, 1, 2, 2, 1, 2, 2, 1, 2],
                     platform="tpu", impl="step", block_b=8, block_n=128,
                     interpret=pltpu.InterpretParams(detect_races=True, random_seed=3))
