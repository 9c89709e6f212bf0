"""The persistent Mosaic GPU kernels (`kernels.persistent`) in Pallas's GPU interpret mode on a
CPU: their one-cluster form, whose CTAs run concurrently with race detection on, against the
scan path (values and gradients for every supported preset and both GRUs, and with every
option: resets, recurrent dropout, zoneout) and against `jax.grad` of the plain reference
(grad_clip, lengths, bf16 weights, the options, the step kernel's backward in place of the
backward kernel), and proof that the race detector fires when either kernel's per-step barrier
is removed.
`test_kernels_persistent_lowering` checks the kernels for an H100 and the choice.

Interpret mode costs seconds per kernel call, so the interpreted cells are tiny.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as interpreter
from jax.experimental.pallas import mosaic_gpu as plgpu

from cases import rel_err
from kernels import autodiff, persistent, platforms, programs, sequence, step
from rnn_research.cells import GRUDef, LSTMDef, PRESETS
from rnn_research.layers import recurrence
from test_kernels import F32_TOL, assert_close, check_against_scan, random_inputs
from test_kernels_options import random_options, value_and_grads

COLUMN_WISE = ("V", "NP", "CIFG", "NIG", "NFG", "NOG", "NIAF", "NOAF")


def _interpreted(run):
  """(what `run()` returns, whether GPU interpret mode found a race while it ran): jax 0.12
  raises, jax 0.11 prints and records it."""
  interpreter.reset_gpu_interpret_mode_state()
  try:
    out = jax.block_until_ready(run())
    return out, interpreter.get_races().races_found
  except Exception as error:  # noqa: BLE001
    if "RACE DETECTED" in str(error):
      return None, True
    raise
  finally:  # a raise leaves the interpreter's global state broken
    interpreter.reset_gpu_interpret_mode_state()


@pytest.mark.parametrize("cell", [LSTMDef(3, 32, PRESETS["V"]), GRUDef(3, 32),
                                  GRUDef(3, 32, reset_after=False)],
                         ids=["lstm-V", "gru", "gru-cho"])
def test_interpreted_values_and_gradients_match_scan(cell, rng):
  """Two CTAs split the contraction, forward and backward; lengths freeze rows. Cho's GRU
  runs in two stages around its R_n, split over the CTAs too."""
  _, race = _interpreted(lambda: check_against_scan(cell, rng, 3, 4, [4, 2, 3], platform="cpu",
                                                    impl="persistent"))
  assert not race


@pytest.mark.parametrize("preset", [p for p in COLUMN_WISE if p != "V"])
def test_interpreted_values_and_gradients_match_scan_for_every_column_wise_preset(preset, rng):
  _, race = _interpreted(lambda: check_against_scan(
      LSTMDef(3, 32, PRESETS[preset]), rng, 2, 3, None, platform="cpu", impl="persistent"))
  assert not race


@pytest.mark.parametrize("cell,zoneout", [
    (LSTMDef(5, 32, PRESETS["V"]), "step"), (GRUDef(5, 32), "rate"),
    (GRUDef(5, 32, reset_after=False), "step")], ids=["lstm-V", "gru", "gru-cho"])
def test_interpreted_options_match_scan(cell, zoneout, rng):
  """Resets, recurrent dropout, zoneout (weights per step, or the rate), lengths and grad_clip
  at once, forward and gradients."""
  params, xs, carry0, weights = random_inputs(cell, rng, 3, 5)
  options = random_options(cell, rng, 3, 5, zoneout)
  kernel = functools.partial(recurrence, backend="pallas", platform="cpu", impl="persistent")
  got, race = _interpreted(lambda: value_and_grads(kernel, cell, params, xs, carry0, weights,
                                                   options))
  assert not race
  assert_close(got, value_and_grads(recurrence, cell, params, xs, carry0, weights, options),
               F32_TOL)


def _config(program, **options):
  return persistent.PersistentConfig(
      program, 32, 2, barrier="cluster", interpret=plgpu.InterpretGPUParams(detect_races=True),
      **options)


def _value_and_grads(op, packed, weights):
  """A loss of the op's state sequences and final states, and its gradients w.r.t. xp,
  states0, weights and small (kernel layout)."""
  loss = lambda *a: sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(op(*a)))
  return jax.jit(jax.value_and_grad(loss, (0, 1, 2, 3)))(packed.xp, packed.states0, weights,
                                                         packed.small)


@pytest.mark.parametrize("cell,weight_dtype,tol", [
    (LSTMDef(3, 32, PRESETS["V"]), jnp.float32, F32_TOL),
    (GRUDef(3, 32), jnp.float32, F32_TOL),
    (GRUDef(3, 32, reset_after=False), jnp.float32, F32_TOL),
    (LSTMDef(3, 32, PRESETS["NP"]), jnp.bfloat16, 2e-2),
], ids=["lstm-V", "gru", "gru-cho", "lstm-bf16-weights"])
def test_interpreted_backward_matches_grad_of_the_reference(cell, weight_dtype, tol, rng):
  """The op's gradients with lengths and grad_clip (small enough to clip) against jax.grad of
  `sequence_reference`; bf16 weights under f32 inputs: d rprojs written apart from d xs."""
  program = programs.Program(cell)
  params, xs, carry0, _ = random_inputs(cell, rng, 16, 4)
  packed = program.pack(params, cell.input_projection(params, xs), carry0, 16, 32, 32)
  weights = tuple(w.astype(weight_dtype) for w in packed.weights)
  lengths = jnp.asarray(rng.integers(0, 5, (16, 1)), jnp.int32)
  assert persistent.separate_rprojs(program, weight_dtype, packed.xp.dtype) == (
      isinstance(cell, GRUDef) and cell.reset_after or weight_dtype != jnp.float32)
  clip = 0.05
  cfg = _config(program, grad_clip=clip)
  got, race = _interpreted(lambda: _value_and_grads(
      lambda *a: persistent.persistent_sequence(cfg, *a, lengths), packed, weights))
  assert not race
  want = _value_and_grads(
      lambda *a: sequence.sequence_reference(program, *a, lengths, grad_clip=clip), packed,
      weights)
  assert_close(got, want, tol)
  unclipped = _value_and_grads(lambda *a: sequence.sequence_reference(program, *a, lengths),
                               packed, weights)
  assert rel_err(unclipped[1][2][0], want[1][2][0]) > 10 * tol  # the clip is not a no-op


def test_interpreted_four_ctas_match_the_reference_without_races(rng):
  """Four CTAs per cluster, forward and backward: the leaders reuse their staging buffers for
  several peers' partial sums, and each TMA copy into one waits for the reads before it."""
  cell = LSTMDef(3, 64, PRESETS["V"])
  program = programs.Program(cell)
  params, xs, carry0, _ = random_inputs(cell, rng, 16, 3)
  packed = program.pack(params, cell.input_projection(params, xs), carry0, 16, 64, 64)
  cfg = persistent.PersistentConfig(program, 64, 4, barrier="cluster",
                                    interpret=plgpu.InterpretGPUParams(detect_races=True))
  got, race = _interpreted(lambda: _value_and_grads(
      lambda *a: persistent.persistent_sequence(cfg, *a, None), packed, packed.weights))
  assert not race
  want = _value_and_grads(lambda *a: sequence.sequence_reference(program, *a, None), packed,
                          packed.weights)
  assert_close(got, want, F32_TOL)


def _interpreted_kernel_inputs(rng, hidden=32, batch=16, steps=3, cell=None):
  cell = cell or LSTMDef(3, hidden, PRESETS["NP"])
  program = programs.Program(cell)
  params, xs, carry0, _ = random_inputs(cell, rng, batch, steps)
  packed = program.pack(params, cell.input_projection(params, xs), carry0, batch, hidden,
                        hidden)
  return program, packed


@pytest.mark.parametrize("cell", [None, GRUDef(3, 32, reset_after=False)], ids=["lstm", "cho"])
@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_race_detector_fires_without_the_grid_barrier(kernel, cell, rng):
  """The tests above can fail: without the per-step barriers a CTA reads h_{t-1} (forward) or
  step j's gate cotangents (backward), or Cho's r ⊙ h (or its cotangent), while the leader
  writes them, and the interpreter says so."""
  program, packed = _interpreted_kernel_inputs(rng, cell=cell)
  cfg = _config(program)
  args = (packed.xp, packed.states0, packed.weights, packed.small, autodiff.Extras())
  seqs, finals = persistent._forward(cfg, *args)  # pylint: disable=protected-access
  run = persistent._forward  # pylint: disable=protected-access
  if kernel == "backward":
    entering = autodiff.entering_states(program, packed.states0, seqs, None)
    args = (packed.xp, entering, tuple(map(jnp.cos, seqs)), tuple(map(jnp.sin, finals)),
            packed.weights, packed.small, autodiff.Extras())
    run = persistent._backward  # pylint: disable=protected-access
  outs, race = _interpreted(lambda: run(cfg, *args))
  assert not race and all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(outs))
  assert _interpreted(lambda: run(dataclasses.replace(cfg, grid_barrier=False), *args))[1]


@pytest.mark.parametrize("cell,backward,zoneout", [
    (LSTMDef(3, 32, PRESETS["NP"]), "persistent", "step"),
    (LSTMDef(3, 32, PRESETS["NP"]), "step", "const"),
    (GRUDef(3, 32, reset_after=False), "step", "step")], ids=["lstm", "lstm-step", "cho-step"])
def test_interpreted_options_match_grad_of_the_reference(cell, backward, zoneout, rng):
  """The op with lengths, resets (one at t = 0), a scaled dropout mask and zoneout weights per
  step or constant, against jax.grad of `sequence_reference`: the backward kernel, or the step
  kernel running the backward on arrays padded to its hidden size (64 for 32), the options
  (and Cho's R_n) padded with them."""
  program, packed = _interpreted_kernel_inputs(rng, steps=4, cell=cell)
  draws = lambda shape: jnp.asarray(rng.random(shape) < 0.3, jnp.float32)
  resets = jnp.asarray(draws((4, 16, 1)), jnp.int32).at[0, 0].set(1)
  keep = (lambda: draws((4, 16, 32))) if zoneout == "step" else (
      lambda: jnp.full((1, 32), rng.random(), jnp.float32))
  extras = (jnp.asarray(rng.integers(1, 5, (16, 1)), jnp.int32), resets,
            (1 - draws((16, 32))) / 0.7, tuple(keep() for _ in packed.states0))
  fallback = {}
  if backward == "step":
    fallback = dict(backward=step.StepConfig(program, platforms.resolve("cpu"), 16, 64, 0.1),
                    backward_hidden=64)
  cfg = _config(program, grad_clip=0.1, **fallback)
  got, race = _interpreted(lambda: _value_and_grads(
      lambda *a: persistent.persistent_sequence(cfg, *a, *extras), packed, packed.weights))
  assert not race
  want = _value_and_grads(
      lambda *a: sequence.sequence_reference(program, *a, *extras, grad_clip=0.1), packed,
      packed.weights)
  assert_close(got, want, F32_TOL)
