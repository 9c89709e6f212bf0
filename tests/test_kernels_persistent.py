"""The persistent Mosaic GPU kernel (`kernels.persistent`) in Pallas's GPU interpret mode on a
CPU: its one-cluster form, whose CTAs run concurrently with race detection on, against the scan
path (forward for every supported preset, gradients for the LSTM and the GRU), and proof that
the race detector fires when the per-step barrier is removed. `test_kernels_persistent_lowering`
checks the kernel for an H100 and the choice.

Interpret mode costs about 10 s per kernel call, so the interpreted cells are tiny.
"""
import dataclasses

import jax
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from cases import rel_err
from kernels import autodiff, persistent, programs
from rnn_research.cells import GRUDef, LSTMDef, PRESETS
from rnn_research.layers import recurrence
from test_kernels import F32_TOL, check_against_scan, random_inputs

COLUMN_WISE = ("V", "NP", "CIFG", "NIG", "NFG", "NOG", "NIAF", "NOAF")


@pytest.mark.parametrize("cell", [LSTMDef(3, 32, PRESETS["V"]), GRUDef(3, 32)],
                         ids=["lstm-V", "gru"])
def test_interpreted_values_and_gradients_match_scan(cell, rng):
  """Two CTAs split the contraction; lengths freeze rows; the backward is the step kernel's,
  padded and cut around the persistent layout."""
  check_against_scan(cell, rng, 3, 4, [4, 2, 3], platform="cpu", impl="persistent")


@pytest.mark.parametrize("preset", [p for p in COLUMN_WISE if p != "V"])
def test_interpreted_forward_matches_scan_for_every_column_wise_preset(preset, rng):
  cell = LSTMDef(3, 32, PRESETS[preset])
  params, xs, carry0, _ = random_inputs(cell, rng, 2, 3)
  xp = cell.input_projection(params, xs)
  got = recurrence(cell, params, xp, carry0, backend="pallas", platform="cpu",
                   impl="persistent")
  want = recurrence(cell, params, xp, carry0)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(a, b) < F32_TOL


def _interpreted_kernel_inputs(rng, hidden=32, batch=16, steps=3):
  cell = LSTMDef(3, hidden, PRESETS["NP"])
  program = programs.Program(cell)
  params, xs, carry0, _ = random_inputs(cell, rng, batch, steps)
  packed = program.pack(params, cell.input_projection(params, xs), carry0, batch, hidden,
                        hidden)
  return program, packed


def test_race_detector_fires_without_the_grid_barrier(rng):
  """The test above can fail: without the per-step barrier a CTA reads h_{t-1} while the
  leader writes it, and the interpreter says so."""
  program, packed = _interpreted_kernel_inputs(rng)
  cfg = persistent.PersistentConfig(
      program, 32, 2, backward=None, backward_hidden=32, barrier="cluster",
      interpret=plgpu.InterpretGPUParams(detect_races=True, on_race="raise"))
  args = (packed.xp, packed.states0, packed.weights, packed.small, autodiff.Extras())
  seqs, _ = persistent._forward(cfg, *args)  # pylint: disable=protected-access
  assert np.isfinite(np.asarray(seqs[1])).all()
  try:
    with pytest.raises(Exception, match="RACE DETECTED"):
      jax.block_until_ready(persistent._forward(  # pylint: disable=protected-access
          dataclasses.replace(cfg, grid_barrier=False), *args))
  finally:  # the interpreter's global state is left broken by a raise
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call
    interpret_pallas_call.reset_gpu_interpret_mode_state()
