"""The kernels' options in interpret mode: state resets, variational recurrent dropout, zoneout
and recurrent-gradient clipping (per call), cell clipping, layer norm and head-wise recurrence
(per cell). Forward and gradients against the scan path with the same masks, and the kernel
ops against their plain-jnp references differentiated by jax.grad."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.pallas import tpu as pltpu

from test_kernels import F32_TOL, assert_close, random_inputs
from kernels import platforms, programs, rnn, sequence, step
from rnn_research.cells import ElmanDef, GRUDef, LSTMDef, MGUDef, PRESETS
from rnn_research.layers import LSTM, recurrence


@pytest.fixture(autouse=True, scope="module")
def quick_compiles():
  """Interpret mode turns each kernel into a large XLA program; its values, not its speed, are
  under test here, so XLA compiles it (and the scan) with few optimisations."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def random_options(cell, rng, batch, steps, zoneout):
  """lengths, resets (some at t = 0 and past a length), a dropout mask (p = 0.3, scaled),
  zoneout weights: 0/1 per step ("step") or the rates themselves ("rate"), and grad_clip."""
  lengths = np.array([steps, 2, steps - 2, 1][:batch])
  resets = rng.random((steps, batch)) < 0.3
  resets[0, 0] = resets[steps - 1, 1] = True
  h_mask = (rng.random((batch, cell.output_size)) > 0.3) / 0.7
  widths = (cell.hidden_size, cell.output_size) if isinstance(cell, LSTMDef) else (
      cell.hidden_size,)
  if zoneout == "step":
    keeps = tuple((rng.random((steps, batch, w)) < 0.3).astype(np.float32) for w in widths)
  else:
    keeps = tuple(np.full((1, 1, 1), rate, np.float32) for rate in (0.3, 0.1)[:len(widths)])
  return dict(lengths=jnp.asarray(lengths), resets=jnp.asarray(resets),
              h_mask=jnp.asarray(h_mask, jnp.float32),
              zoneout=tuple(map(jnp.asarray, keeps)) if len(keeps) == 2 else jnp.asarray(keeps[0]),
              grad_clip=0.1)


def value_and_grads(recur, cell, params, xs, carry0, weights, options):
  """(final carry, ys) and the gradients of a loss reading both, w.r.t. params, xs, carry0."""
  static = {k: v for k, v in options.items() if k == "grad_clip"}
  arrays = {k: v for k, v in options.items() if k != "grad_clip"}

  @jax.jit
  def run(params, xs, carry0, arrays):
    def loss(params, xs, carry0):
      final, ys = recur(cell, params, cell.input_projection(params, xs), carry0, **arrays,
                        **static)
      value = jnp.sum(ys * weights)
      value += sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))
      return value, (final, ys)
    grads, outputs = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry0)
    return outputs, grads

  return run(params, xs, carry0, arrays)


OPTION_CASES = {
    # peepholes, cell clipping; two batch blocks, three time chunks
    "lstm-V-clip": (LSTMDef(5, 6, PRESETS["V"], cell_clip=0.5),
                    dict(impl="sequence", block_b=2, block_t=3, remat=2), "step"),
    # h masked where it feeds R but not the gate recurrence; no zoneout on the gate states
    "lstmp-FGR": (LSTMDef(5, 6, PRESETS["FGR"], proj_size=4), dict(impl="step"), "rate"),
    # layer norm with 4 zero lanes (12 padded to 16) excluded from the statistics
    "lstm-LN-V-gpu-lanes": (LSTMDef(5, 12, PRESETS["V"], layer_norm=True, cell_clip=0.5),
                            dict(platform="gpu", interpret=True, impl="sequence"), "step"),
    # one program per head, each head padded to 16 lanes
    "lstm-CIFG-heads-gpu-lanes": (LSTMDef(5, 8, PRESETS["CIFG"], num_heads=2),
                                  dict(platform="gpu", interpret=True, impl="step"), "rate"),
    "gru-heads": (GRUDef(5, 6, num_heads=3),
                  dict(impl="sequence", block_b=2, block_t=3), "step"),
    # heads packed block-diagonally (layer norm mixes them), dense R_n
    "gru-cho-LN-heads": (GRUDef(5, 6, reset_after=False, layer_norm=True, num_heads=2),
                         dict(impl="sequence"), "rate"),
}


@pytest.mark.parametrize("name", OPTION_CASES)
def test_options_match_scan(name, rng):
  """Every runtime option at once, the cell's own options, against the scan path."""
  cell, kernel_args, zoneout = OPTION_CASES[name]
  params, xs, carry0, weights = random_inputs(cell, rng, 3, 7)
  options = random_options(cell, rng, 3, 7, zoneout)
  kernel = functools.partial(recurrence, backend="pallas", **kernel_args)
  got = value_and_grads(kernel, cell, params, xs, carry0, weights, options)
  want = value_and_grads(recurrence, cell, params, xs, carry0, weights, options)
  assert_close(got, want, F32_TOL)


def test_tpu_interpret_heads_with_race_detection(rng):
  """Two "parallel" grid axes (batch blocks, heads) in random order, two time chunks carrying
  the state and the cotangents sent to the initial state by resets."""
  cell = LSTMDef(3, 8, PRESETS["NP"], num_heads=2)
  params, xs, carry0, weights = random_inputs(cell, rng, 9, 3)
  options = random_options(cell, rng, 9, 3, "step")
  options["lengths"] = jnp.array([3, 1, 2, 3, 3, 2, 1, 3, 2])
  interpret = pltpu.InterpretParams(detect_races=True, random_seed=5)
  kernel = functools.partial(recurrence, backend="pallas", platform="tpu", interpret=interpret,
                             impl="sequence", block_b=8, block_t=2)
  got = value_and_grads(kernel, cell, params, xs, carry0, weights, options)
  want = value_and_grads(recurrence, cell, params, xs, carry0, weights, options)
  assert_close(got, want, F32_TOL)


def test_neutral_options_change_nothing(rng):
  """No resets, an all-ones mask, zero zoneout and a clip no cotangent reaches give the result
  without options (to float32 rounding: XLA may fuse keep·old + (1 − keep)·new differently)."""
  cell = ElmanDef(5, 6)
  params, xs, carry0, weights = random_inputs(cell, rng, 3, 5)
  kernel = functools.partial(recurrence, backend="pallas", impl="sequence", block_t=2)
  neutral = dict(resets=jnp.zeros((5, 3), bool), h_mask=jnp.ones((3, 6), jnp.float32),
                 zoneout=jnp.zeros((5, 3, 6), jnp.float32), grad_clip=1e30)
  got = value_and_grads(kernel, cell, params, xs, carry0, weights, neutral)
  want = value_and_grads(kernel, cell, params, xs, carry0, weights, {})
  assert_close(got, want, 1e-6)


def test_ops_match_their_references(rng):
  """The sequence and step ops of a head-wise Elman cell, every option on, against
  `sequence_reference` / `step_reference` differentiated by jax.grad."""
  cell = ElmanDef(5, 6, num_heads=2)
  program = programs.program_for(cell)
  assert program.heads == 2
  params, xs, carry0, _ = random_inputs(cell, rng, 4, 5)
  packed = program.pack(params, cell.input_projection(params, xs), carry0, 4, 6, 6)
  ones = lambda shape: jnp.asarray(rng.random(shape) < 0.4, jnp.float32)
  lengths = jnp.array([[5], [1], [3], [4]], jnp.int32)
  resets = jnp.asarray(rng.random((5, 4, 1)) < 0.4, jnp.int32)
  h_mask = 2 * ones((4, 6))
  keeps = (ones((5, 4, 6)),)
  loss = lambda f: lambda *a: sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(f(*a)))
  grads = lambda f, argnums: jax.jit(jax.value_and_grad(loss(f), argnums))
  args = (packed.xp, packed.states0, packed.weights, packed.small)

  cfg = sequence.SequenceConfig(program, platforms.resolve("cpu"), 2, 2, True, grad_clip=0.2)
  xp = programs.pad_to(packed.xp, (6, *packed.xp.shape[1:]))  # 3 chunks of 2 steps
  pad_t = lambda a: programs.pad_to(a, (6, *a.shape[1:]))
  extras = (lengths, pad_t(resets), h_mask, (pad_t(keeps[0]),))
  got = grads(lambda *a: sequence.fused_sequence(cfg, *a, *extras), (0, 1, 2, 3))(xp, *args[1:])
  want = grads(lambda *a: sequence.sequence_reference(program, *a, *extras, grad_clip=0.2),
               (0, 1, 2, 3))(xp, *args[1:])
  assert_close(got, want, F32_TOL)

  step_cfg = step.StepConfig(program, platforms.resolve("cpu"), 2, 3)
  options = dict(reset=resets[2], h_mask=h_mask, keeps=(jnp.full((1, 6), 0.25, jnp.float32),))
  step_args = (packed.xp[2], packed.states0, packed.weights, packed.small, lengths > 2)
  states0 = tuple(2 * s for s in packed.states0)
  got = grads(lambda *a: step.fused_step(step_cfg, *a[:4], a[4].astype(jnp.int32),
                                         states0=a[5], **options), (0, 1, 2, 3, 5))(
      *step_args, states0)
  want = grads(lambda *a: step.step_reference(program, *a[:4], a[4].astype(jnp.int32),
                                              states0=a[5], **options), (0, 1, 2, 3, 5))(
      *step_args, states0)
  assert_close(got, want, F32_TOL)


def test_layer_draws_the_same_masks_for_both_backends(rng):
  """An LSTM layer in training mode with dropout, zoneout and resets: the kernels and the scan
  see the same masks and give the same outputs."""
  xs = jnp.asarray(rng.standard_normal((3, 6, 4)), jnp.float32)
  lengths = jnp.array([6, 4, 5])
  resets = jnp.asarray(rng.random((3, 6)) < 0.3)
  make = lambda backend: LSTM(4, 5, variant="NP", input_dropout=0.2, recurrent_dropout=0.3,
                              zoneout_c=0.3, zoneout_h=0.2, rngs=nnx.Rngs(0, dropout=1),
                              backend=backend)
  call = nnx.jit(lambda model: model(xs, lengths=lengths, resets=resets))
  assert_close(call(make("pallas")), call(make("scan")), F32_TOL)


def test_supports():
  lstm = LSTMDef(4, 6, PRESETS["V"], layer_norm=True, num_heads=2)
  assert rnn.supports(lstm, "tpu") and rnn.supports(lstm, "gpu")
  assert not rnn.supports(lstm, "cpu")
  assert rnn.supports(MGUDef(4, 6), "tpu") and not rnn.supports(object(), "tpu")


def test_bad_options(rng):
  cell = LSTMDef(4, 6, PRESETS["NP"])
  params, xs, carry0, _ = random_inputs(cell, rng, 3, 2)
  xp = cell.input_projection(params, xs)
  call = lambda **options: recurrence(cell, params, xp, carry0, backend="pallas", **options)
  with pytest.raises(ValueError, match=r"resets must be bool of shape \[time, batch\]=\(2, 3\)"):
    call(resets=jnp.zeros((3, 2), bool))
  with pytest.raises(ValueError,
                     match=r"h_mask must be float of shape \[batch, output_size\]=\(3, 6\)"):
    call(h_mask=jnp.ones((3, 5)))
  with pytest.raises(ValueError, match=r"zoneout must be None or a pair \(keep_c, keep_h\)"):
    call(zoneout=jnp.ones((2, 3, 6)))
  with pytest.raises(ValueError, match="zoneout weights must be float and broadcast to"):
    call(zoneout=(None, jnp.ones((2, 3, 5))))
  with pytest.raises(ValueError, match="grad_clip must be None or a float > 0"):
    call(grad_clip=0.0)
