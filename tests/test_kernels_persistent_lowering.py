"""The persistent Mosaic GPU kernel (`kernels.persistent`) for an H100, checked on a CPU:

- lowering for cuda with the Mosaic GPU backend at hidden 256-1024, batch 16-64: the shared
  memory per CTA read from Mosaic, within the H100/H200 budget and equal to the plan's;
- the choice: the persistent kernel on gpu where the weights are too big for one program,
  the step kernel, logged with the reason, where it cannot run; the gradient (the persistent
  forward, the Triton step kernel's backward) lowers.
"""
import logging
import re

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.mosaic.gpu import core as mgpu_core
from jax.sharding import AbstractDevice, AbstractMesh

from kernels import autodiff, persistent, platforms, programs
from rnn_research.cells import GRUDef, LSTMDef, PRESETS
from rnn_research.layers import recurrence

H100 = AbstractMesh((1,), ("x",), abstract_device=AbstractDevice(
    device_kind="NVIDIA H100", num_cores=132, platform="cuda"))
HIDDEN, BATCH = (256, 512, 768, 1024), (16, 32, 64)
MOSAIC_CALL = "mosaic_gpu"


def _forward_lowering(cell, hidden, batch, dtype, cluster, steps=8):
  """The persistent forward kernel for an H100 (no device needed): a function that lowers it
  for cuda through the Mosaic GPU pipeline."""
  program = programs.Program(cell)
  n, b = persistent.padded_sizes(hidden, batch)
  cfg = persistent.PersistentConfig(program, persistent.UNITS, cluster, backward=None,
                                    backward_hidden=n)
  spec = jax.ShapeDtypeStruct
  args = (spec((steps, program.num_gates, b, n), dtype),
          tuple(spec((b, n), jnp.float32) for _ in program.state_widths(n, n)),
          tuple(spec((n, n), dtype) for _ in program.terms),
          tuple(spec((1, n), jnp.float32) for _ in program.small_names))

  def forward(*a):
    return persistent._forward(cfg, *a, autodiff.Extras())  # pylint: disable=protected-access

  def lower():
    with jax.sharding.use_abstract_mesh(H100):
      return jax.jit(forward).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
  return lower


def _smem_bytes(lower) -> int:
  """Mosaic's shared memory per CTA, read from its budget error under a 1-byte limit (the
  check runs after layout inference and allocation, before the rest of the lowering)."""
  with mgpu_core.artificial_shared_memory_limit(1):
    with pytest.raises(Exception, match="smem_bytes") as error:
      lower()
  return int(re.search(r"smem_bytes=(\d+)", str(error.value)).group(1))


def _make(cell_kind, hidden):
  return GRUDef(hidden, hidden) if cell_kind == "gru" else LSTMDef(hidden, hidden, PRESETS["V"])


@pytest.mark.parametrize("batch", BATCH)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("cell_kind", ["lstm-V", "gru"])
def test_shared_memory_per_cta_within_the_h100_budget(cell_kind, hidden, batch):
  cell = _make(cell_kind, hidden)
  program = programs.Program(cell)
  cluster, why = persistent.plan(program, hidden, batch, jnp.bfloat16, jnp.bfloat16, False)
  assert why is None
  used = _smem_bytes(_forward_lowering(cell, hidden, batch, jnp.bfloat16, cluster))
  planned = persistent.smem_bytes(program, *persistent.padded_sizes(hidden, batch), cluster,
                                  jnp.bfloat16, jnp.bfloat16, False)
  assert planned <= used <= planned + 1024  # Mosaic's barriers and alignment
  assert used <= persistent.SMEM_PLAN_BYTES < persistent.SMEM_LIMIT_BYTES


@pytest.mark.parametrize("cell_kind,hidden,batch", [("lstm-V", 1024, 64), ("gru", 768, 32)])
def test_lowers_for_h100(cell_kind, hidden, batch):
  """The whole Mosaic GPU pipeline (about 30 s a size on a busy CPU, so the corners only;
  every size of the grid above lowered when this was written)."""
  cell = _make(cell_kind, hidden)
  cluster, _ = persistent.plan(programs.Program(cell), hidden, batch, jnp.bfloat16,
                               jnp.bfloat16, False)
  assert MOSAIC_CALL in _forward_lowering(cell, hidden, batch, jnp.bfloat16, cluster)()


def test_plan_refuses_what_overflows_shared_memory():
  """f32 weights at hidden 1024, batch 64: the plan says no, and forcing the kernel on the
  largest cluster that fits the SMs does overflow the H100's shared memory."""
  cell = LSTMDef(1024, 1024, PRESETS["V"])
  cluster, why = persistent.plan(programs.Program(cell), 1024, 64, jnp.float32, jnp.float32,
                                 False)
  assert cluster == 0 and "shared memory" in why
  lower = _forward_lowering(cell, 1024, 64, jnp.float32, persistent.MAX_CLUSTER)
  assert _smem_bytes(lower) > persistent.SMEM_LIMIT_BYTES


def _choose(cell, dtype, batch=16, impl=None, **arrays):
  """Traces the kernels' gradient for gpu (no device needed); `arrays`: options given as
  shapes (resets, ...)."""
  params = {k: jax.ShapeDtypeStruct(s, dtype) for k, s in cell.param_shapes().items()}
  xp = jax.ShapeDtypeStruct((4, batch, cell.num_gates * cell.hidden_size), dtype)
  carry0 = jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, dtype),
                        cell.initial_carry((batch,)))

  def grads(params, xp, carry0, arrays):
    def loss(params, xp, carry0):
      out = recurrence(cell, params, xp, carry0, backend="pallas", platform="gpu",
                       interpret=False, impl=impl, **arrays)
      return sum(jnp.sum(a.astype(jnp.float32)) for a in jax.tree.leaves(out))
    return jax.grad(loss, argnums=(0, 1, 2))(params, xp, carry0)

  jax.eval_shape(grads, params, xp, carry0, arrays)


@pytest.mark.parametrize("cell,dtype,batch,options,expected", [
    (LSTMDef(8, 768, PRESETS["V"]), jnp.bfloat16, 16, {}, "running the persistent kernel"),
    (GRUDef(8, 1024), jnp.bfloat16, 64, {}, "running the persistent kernel"),
    (LSTMDef(8, 1024, PRESETS["NP"]), jnp.float32, 64, {},
     "the persistent kernel cannot: no cluster of <= 8 CTAs fits hidden 1024"),
    (LSTMDef(8, 256, PRESETS["NP"]), jnp.bfloat16, 16,
     {"resets": jax.ShapeDtypeStruct((4, 16), jnp.bool_)},
     "the persistent kernel cannot: resets is not fused into it yet"),
    (LSTMDef(8, 256, PRESETS["FGR"]), jnp.bfloat16, 16, {},
     "the persistent kernel cannot: a recurrent weight reads a state other than h (FGR)"),
    (LSTMDef(8, 256, PRESETS["V"], proj_size=64), jnp.bfloat16, 16, {},
     "the persistent kernel cannot: its gate math mixes hidden columns"),
    (LSTMDef(8, 512, PRESETS["NP"], num_heads=2), jnp.bfloat16, 16, {},
     "the persistent kernel cannot: its recurrence is head-wise"),
], ids=["lstm768", "gru1024-b64", "f32-overflow", "resets", "fgr", "lstmp", "heads"])
def test_gpu_choice_is_logged(cell, dtype, batch, options, expected, caplog):
  platforms.log_once.cache_clear()
  with caplog.at_level(logging.WARNING, logger="kernels.platforms"):
    _choose(cell, dtype, batch, **options)
  messages = [r.getMessage() for r in caplog.records]
  assert len(messages) == 1 and expected in messages[0], messages


def test_persistent_on_request_says_why_it_cannot():
  with pytest.raises(ValueError, match="impl='persistent' cannot run .* resets"):
    _choose(LSTMDef(8, 256, PRESETS["NP"]), jnp.bfloat16, impl="persistent",
            resets=jax.ShapeDtypeStruct((4, 16), jnp.bool_))


def test_gradient_lowers_for_h100_with_the_persistent_forward():
  """The whole gradient: the Mosaic GPU forward and the Triton step kernel's backward."""
  cell = LSTMDef(8, 768, PRESETS["NP"])
  spec = jax.ShapeDtypeStruct
  params = {k: spec(s, jnp.bfloat16) for k, s in cell.param_shapes().items()}
  xp = spec((4, 16, 4 * 768), jnp.bfloat16)
  carry0 = jax.tree.map(lambda c: spec(c.shape, jnp.bfloat16), cell.initial_carry((16,)))
  lengths = spec((16,), jnp.int32)

  def grads(params, xp, carry0, lengths):
    def loss(params, xp, carry0):
      out = recurrence(cell, params, xp, carry0, lengths, backend="pallas", platform="gpu",
                       interpret=False)
      return sum(jnp.sum(a.astype(jnp.float32)) for a in jax.tree.leaves(out))
    return jax.grad(loss, argnums=(0, 1, 2))(params, xp, carry0)

  with jax.sharding.use_abstract_mesh(H100):
    text = jax.jit(grads).trace(params, xp, carry0, lengths).lower(
        lowering_platforms=("cuda",)).as_text()
  calls = re.findall(r"custom_call @([\w$.]+)", text)
  assert any(MOSAIC_CALL in c for c in calls) and "__gpu$xla.gpu.triton" in calls
