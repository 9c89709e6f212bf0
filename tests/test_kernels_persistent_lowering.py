"""The persistent Mosaic GPU kernels (`kernels.persistent`) for an H100, checked on a CPU:

- lowering for cuda with the Mosaic GPU backend at hidden 256-1024, batch 16-64, forward and
  backward (and with every option): the shared memory per CTA read from Mosaic, within the
  H100/H200 budget and equal to the plan's;
- the choice: the persistent kernels on gpu where the weights are too big for one program,
  the step kernel, logged with the reason, where they cannot run; the whole gradient lowers
  (both persistent kernels, or the persistent forward and the Triton step kernel's backward
  where the backward kernel does not fit).
"""
import functools
import logging
import re

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.mosaic.gpu import core as mgpu_core
from jax.sharding import AbstractDevice, AbstractMesh

from kernels import autodiff, persistent, platforms, programs, rnn
from rnn_research.cells import GRUDef, LSTMDef, PRESETS
from rnn_research.layers import recurrence
from test_kernels import assert_close

H100 = AbstractMesh((1,), ("x",), abstract_device=AbstractDevice(
    device_kind="NVIDIA H100", num_cores=132, platform="cuda"))
HIDDEN, BATCH = (256, 512, 768, 1024), (16, 32, 64)
MOSAIC_CALL = "mosaic_gpu"


def _extras(program, hidden, batch, masked, zoneout=None, steps=8):
  """Kernel-layout options as shapes: lengths if `masked`; with `zoneout` ("step" or "const")
  also resets, the dropout mask and zoneout weights of that kind for every state."""
  n, b = persistent.padded_sizes(hidden, batch)
  spec = jax.ShapeDtypeStruct
  lengths = spec((b, 1), jnp.int32) if masked else None
  if zoneout is None:
    return autodiff.Extras(lengths)
  keep = spec((steps, b, n) if zoneout == "step" else (1, n), jnp.float32)
  return autodiff.Extras(lengths, spec((steps, b, 1), jnp.int32), spec((b, n), jnp.float32),
                         tuple(keep for _ in program.state_widths(n, n)))


def _lowering(kernel, cell, hidden, batch, dtype, cluster, masked=False, zoneout=None,
              steps=8):
  """The persistent "forward" or "backward" kernel for an H100 (no device needed): a function
  that lowers it for cuda through the Mosaic GPU pipeline."""
  program = programs.Program(cell)
  n, b = persistent.padded_sizes(hidden, batch)
  cfg = persistent.PersistentConfig(program, persistent.UNITS, cluster, grad_clip=1.0)
  spec = jax.ShapeDtypeStruct
  states = tuple(spec((b, n), jnp.float32) for _ in program.state_widths(n, n))
  seqs = tuple(spec((steps, b, n), jnp.float32) for _ in states)
  xp = spec((steps, program.num_gates, b, n), dtype)
  weights = tuple(spec((n, n), dtype) for _ in program.terms)
  small = tuple(spec((n, n), dtype) if k == program.inner else spec((1, n), jnp.float32)
                for k in range(len(program.small_names)))
  extras = _extras(program, hidden, batch, masked, zoneout, steps)
  if kernel == "forward":
    args = (xp, states, weights, small, extras)
    run = persistent._forward  # pylint: disable=protected-access
  else:
    args = (xp, seqs, seqs, states, weights, small, extras)
    run = persistent._backward  # pylint: disable=protected-access
  run = functools.partial(run, cfg)

  def lower():
    with jax.sharding.use_abstract_mesh(H100):
      return jax.jit(run).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
  return lower


def _smem_bytes(lower) -> int:
  """Mosaic's shared memory per CTA, read from its budget error under a 1-byte limit (the
  check runs after layout inference and allocation, before the rest of the lowering)."""
  with mgpu_core.artificial_shared_memory_limit(1):
    with pytest.raises(Exception, match="smem_bytes") as error:
      lower()
  return int(re.search(r"smem_bytes=(\d+)", str(error.value)).group(1))


def _make(cell_kind, hidden):
  if cell_kind == "lstm-V":
    return LSTMDef(hidden, hidden, PRESETS["V"])
  return GRUDef(hidden, hidden, reset_after=cell_kind == "gru")


def _used_and_planned(kernel, cell, hidden, batch, dtype, masked, zoneout=None):
  """(Mosaic's shared memory per CTA, the plan's, the plan's cluster) for the kernel at the
  cluster the plan chooses, which must run it."""
  program = programs.Program(cell)
  fused = persistent.Fused.of(_extras(program, hidden, batch, masked, zoneout))
  cluster, why = persistent.plan(program, hidden, batch, dtype, dtype, masked, fused)
  assert why is None
  assert persistent.backward_unsupported(program, hidden, batch, dtype, dtype, masked, cluster,
                                         fused) is None
  used = _smem_bytes(_lowering(kernel, cell, hidden, batch, dtype, cluster, masked, zoneout))
  size = persistent.smem_bytes if kernel == "forward" else persistent.backward_smem_bytes
  planned = size(program, *persistent.padded_sizes(hidden, batch), cluster, dtype, dtype,
                 masked, fused)
  assert planned <= used <= planned + 1024  # Mosaic's barriers and alignment
  return used, planned, cluster


@pytest.mark.parametrize("batch", BATCH)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("cell_kind", ["lstm-V", "gru", "gru-cho"])
@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_shared_memory_per_cta_within_the_h100_budget(kernel, cell_kind, hidden, batch):
  """bf16; the backward with lengths, its largest form."""
  used, _, _ = _used_and_planned(kernel, _make(cell_kind, hidden), hidden, batch, jnp.bfloat16,
                                 kernel == "backward")
  assert used <= persistent.SMEM_PLAN_BYTES < persistent.SMEM_LIMIT_BYTES


@pytest.mark.parametrize("kernel", ["forward", "backward"])
@pytest.mark.parametrize("cell_kind,hidden,batch,zoneout", [
    ("lstm-V", 512, 32, "step"), ("gru", 1024, 16, "const")])
def test_shared_memory_with_every_option(kernel, cell_kind, hidden, batch, zoneout):
  """Lengths, resets, the dropout mask and zoneout weights per step or constant: lowered with
  Mosaic's shared memory per CTA equal to the plan's."""
  cell = _make(cell_kind, hidden)
  program = programs.Program(cell)
  fused = persistent.Fused.of(_extras(program, hidden, batch, True, zoneout))
  assert fused.forward_tiles() == 2 + fused.count("step")
  _, planned, cluster = _used_and_planned(kernel, cell, hidden, batch, jnp.bfloat16, True,
                                          zoneout)
  size = persistent.smem_bytes if kernel == "forward" else persistent.backward_smem_bytes
  plain = size(program, *persistent.padded_sizes(hidden, batch), cluster, jnp.bfloat16,
               jnp.bfloat16, True)
  assert planned > plain if kernel == "forward" or zoneout == "const" else planned == plain


@pytest.mark.parametrize("kernel", ["forward", "backward"])
@pytest.mark.parametrize("cell_kind,hidden,batch", [("lstm-V", 1024, 64), ("gru", 768, 32),
                                                   ("gru-cho", 1024, 64)])
def test_lowers_for_h100(cell_kind, hidden, batch, kernel):
  """The whole Mosaic GPU pipeline (seconds a size, so the corners only; every size of the
  grid above lowered when this was written)."""
  cell = _make(cell_kind, hidden)
  cluster, _ = persistent.plan(programs.Program(cell), hidden, batch, jnp.bfloat16,
                               jnp.bfloat16, False)
  assert MOSAIC_CALL in _lowering(kernel, cell, hidden, batch, jnp.bfloat16, cluster, True)()


def test_plan_refuses_what_overflows_shared_memory():
  """Hidden 1024 at batch 128: the plan says no, and forcing the kernel on the largest
  cluster that fits the SMs does overflow the H100's shared memory."""
  cell = LSTMDef(1024, 1024, PRESETS["V"])
  cluster, why = persistent.plan(programs.Program(cell), 1024, 128, jnp.bfloat16,
                                 jnp.bfloat16, False)
  assert cluster == 0 and "shared memory" in why
  lower = _lowering("forward", cell, 1024, 128, jnp.bfloat16, persistent.MAX_CLUSTER)
  assert _smem_bytes(lower) > persistent.SMEM_LIMIT_BYTES


@pytest.mark.parametrize("kernel", ["forward", "backward"])
@pytest.mark.parametrize("cell_kind,hidden,batch", [("lstm-V", 1024, 16), ("gru", 512, 32)])
def test_f32_weights_lower_where_they_fit(kernel, cell_kind, hidden, batch):
  """f32 weights and inputs (tf32 wgmma, whose operands must be K-major: h and the gate
  cotangents are laid out [B, K]), with lengths: lowered, shared memory equal to the plan's;
  the plan refuses f32 at hidden 1024, batch 64."""
  cell = _make(cell_kind, hidden)
  used, _, _ = _used_and_planned(kernel, cell, hidden, batch, jnp.float32, True)
  assert used <= persistent.SMEM_PLAN_BYTES
  assert persistent.plan(programs.Program(cell), 1024, 64, jnp.float32, jnp.float32,
                         True)[0] == 0


def _option_shapes(cell, batch, steps=4):
  """Resets, a dropout mask and zoneout weights per step (a pair for an LSTM), as shapes."""
  keep = jax.ShapeDtypeStruct((steps, batch, cell.hidden_size), jnp.float32)
  return dict(resets=jax.ShapeDtypeStruct((steps, batch), jnp.bool_),
              h_mask=jax.ShapeDtypeStruct((batch, cell.hidden_size), jnp.float32),
              zoneout=(keep, keep) if isinstance(cell, LSTMDef) else keep)


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
    (LSTMDef(8, 1024, PRESETS["NP"]), jnp.bfloat16, 128, {},
     "the persistent kernel cannot: no cluster of <= 8 CTAs fits hidden 1024"),
    (LSTMDef(8, 512, PRESETS["NP"]), jnp.float32, 16, {}, "running the persistent kernel"),
    (GRUDef(8, 1024, reset_after=False), jnp.bfloat16, 32, {}, "running the persistent kernel"),
    (LSTMDef(8, 256, PRESETS["NP"]), jnp.bfloat16, 16,
     _option_shapes(LSTMDef(8, 256, PRESETS["NP"]), 16), "running the persistent kernel"),
    (LSTMDef(8, 1024, PRESETS["V"]), jnp.bfloat16, 64,
     _option_shapes(LSTMDef(8, 1024, PRESETS["V"]), 64),
     "the persistent kernel cannot: no cluster of <= 8 CTAs fits hidden 1024 (padded 1024) at "
     "batch 64 in 132 SMs with 221184 bytes of shared memory per CTA (65536 of them for the "
     "options)"),
    (LSTMDef(8, 256, PRESETS["FGR"]), jnp.bfloat16, 16, {},
     "the persistent kernel cannot: a recurrent weight reads a state other than h (FGR)"),
    (LSTMDef(8, 256, PRESETS["V"], proj_size=64), jnp.bfloat16, 16, {},
     "the persistent kernel cannot: its gate math mixes hidden columns"),
    (LSTMDef(8, 512, PRESETS["NP"], num_heads=2), jnp.bfloat16, 16, {},
     "the persistent kernel cannot: its recurrence is head-wise"),
], ids=["lstm768", "gru1024-b64", "overflow", "f32", "cho1024", "options", "options-overflow",
        "fgr", "lstmp", "heads"])
def test_gpu_choice_is_logged(cell, dtype, batch, options, expected, caplog):
  platforms.log_once.cache_clear()
  with caplog.at_level(logging.WARNING, logger="kernels.platforms"):
    _choose(cell, dtype, batch, **options)
  messages = [r.getMessage() for r in caplog.records]
  assert len(messages) == 1 and expected in messages[0], messages


def test_persistent_on_request_says_why_it_cannot():
  with pytest.raises(ValueError, match=r"impl='persistent' cannot run .* other than h \(FGR\)"):
    _choose(LSTMDef(8, 256, PRESETS["FGR"]), jnp.bfloat16, impl="persistent")


@pytest.mark.parametrize("cell,dtype,batch,backward,options", [
    (LSTMDef(8, 768, PRESETS["NP"]), jnp.bfloat16, 16, "persistent", False),
    (LSTMDef(8, 512, PRESETS["V"]), jnp.bfloat16, 32, "persistent", True),
    (GRUDef(8, 512), jnp.float32, 16, "persistent", False),
    (GRUDef(8, 768, reset_after=False), jnp.bfloat16, 32, "persistent", True),
    (GRUDef(8, 768), jnp.bfloat16, 96, "step", False),
], ids=["lstm768", "lstm512-options", "gru512-f32", "cho768-options", "gru768-b96"])
def test_gradient_lowers_for_h100(cell, dtype, batch, backward, options, caplog):
  """The whole gradient: the Mosaic GPU forward and backward (with every option too), or,
  where the backward kernel's shared memory does not fit (GRU at batch 96 with lengths), the
  Triton step kernel's backward, logged."""
  hidden = cell.hidden_size
  spec = jax.ShapeDtypeStruct
  params = {k: spec(s, dtype) for k, s in cell.param_shapes().items()}
  xp = spec((4, batch, cell.num_gates * hidden), dtype)
  carry0 = jax.tree.map(lambda c: spec(c.shape, dtype), cell.initial_carry((batch,)))
  lengths = spec((batch,), jnp.int32)
  arrays = _option_shapes(cell, batch) if options else {}

  def grads(params, xp, carry0, lengths, arrays):
    def loss(params, xp, carry0):
      out = recurrence(cell, params, xp, carry0, lengths, backend="pallas", platform="gpu",
                       interpret=False, **arrays)
      return sum(jnp.sum(a.astype(jnp.float32)) for a in jax.tree.leaves(out))
    return jax.grad(loss, argnums=(0, 1, 2))(params, xp, carry0)

  platforms.log_once.cache_clear()
  with caplog.at_level(logging.WARNING, logger="kernels.platforms"):
    with jax.sharding.use_abstract_mesh(H100):
      text = jax.jit(grads).trace(params, xp, carry0, lengths, arrays).lower(
          lowering_platforms=("cuda",)).as_text()
  calls = re.findall(r"custom_call @([\w$.]+)", text)
  mosaic = sum(MOSAIC_CALL in c for c in calls)
  messages = " ".join(r.getMessage() for r in caplog.records)
  assert "running the persistent kernel" in messages
  if backward == "persistent":
    assert mosaic == 2 and "__gpu$xla.gpu.triton" not in calls, calls
    assert "runs the persistent kernel's backward" not in messages
  else:
    assert mosaic == 1 and "__gpu$xla.gpu.triton" in calls, calls
    assert "the step kernel runs the persistent kernel's backward in a scan (its backward " \
           "needs" in messages, messages


def test_auto_runs_the_scan_where_no_kernel_can(monkeypatch, caplog, rng):
  """On a GPU, a Cho GRU of hidden 1024 at batch 300: its R_n fits no single kernel program
  and the persistent kernel refuses the batch, so backend="auto" runs the scan, logged, and
  "pallas" says why it cannot."""
  monkeypatch.setattr(platforms, "default_platform", lambda: "gpu")
  cell = GRUDef(2, 1024, reset_after=False)
  params = cell.init_params(jax.random.key(0))
  xp = cell.input_projection(params, jnp.asarray(rng.standard_normal((2, 300, 2)), jnp.float32))
  carry0 = cell.initial_carry((300,))
  platforms.log_once.cache_clear()
  with caplog.at_level(logging.WARNING, logger="kernels.platforms"):
    got = recurrence(cell, params, xp, carry0, backend="auto")
  assert "backend='auto' runs the scan instead" in caplog.text
  assert "batch 300 pads to 304 > 256" in caplog.text
  assert_close(got, recurrence(cell, params, xp, carry0, backend="scan"), 1e-7)
  with pytest.raises(rnn.Unsupported, match="hidden_size=1024 is too large for the Pallas"):
    recurrence(cell, params, xp, carry0, backend="pallas")
