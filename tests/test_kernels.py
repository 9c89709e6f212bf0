"""The Pallas kernels in interpret mode against the scan path: outputs, final carries and
gradients (inputs, initial carry, every weight), for every cell the kernels cover."""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cases import CASES, random_params, rel_err
from kernels import platforms, programs, rnn, sequence, step
from rnn_research.cells import GRUDef, LSTMDef, PRESETS
from rnn_research.layers import LSTM, recurrence, run

pallas = functools.partial(recurrence, backend="pallas")

KERNEL_CASES = CASES  # every cell, MGU and MUT too, declares its gate math on blocks
F32_TOL, BF16_TOL = 1e-5, 2e-2


def random_inputs(cell, rng, batch, steps, dtype=np.float32):
  params = random_params(cell, rng, np.float32)
  xs = rng.standard_normal((steps, batch, cell.in_features)).astype(np.float32)
  carry0 = jax.tree.map(lambda c: rng.standard_normal(c.shape).astype(np.float32),
                        cell.initial_carry((batch,)))
  weights = rng.standard_normal((steps, batch, cell.output_size)).astype(np.float32)
  as_dtype = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)
  return as_dtype(params), as_dtype(xs), as_dtype(carry0), jnp.asarray(weights)


def value_and_grads(recur, cell, params, xs, carry0, weights, lengths):
  """(final carry, ys) and the gradients of a loss reading both, w.r.t. params, xs, carry0."""
  def loss(params, xs, carry0):
    final, ys = recur(cell, params, cell.input_projection(params, xs), carry0, lengths)
    value = jnp.sum(ys.astype(jnp.float32) * weights)
    value += sum(jnp.sum(jnp.sin(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(final))
    return value, (final, ys)

  grads, outputs = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry0)
  return outputs, grads


def assert_close(got, want, tol):
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(got_leaves, want_leaves):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert rel_err(a, b) < tol, rel_err(a, b)


def check_against_scan(cell, rng, batch, steps, lengths, tol=F32_TOL, **kernel_args):
  params, xs, carry0, weights = random_inputs(cell, rng, batch, steps)
  lengths = None if lengths is None else jnp.asarray(lengths)
  kernel = lambda *a: recurrence(*a, backend="pallas", **kernel_args)
  got = value_and_grads(kernel, cell, params, xs, carry0, weights, lengths)
  want = value_and_grads(recurrence, cell, params, xs, carry0, weights, lengths)
  assert_close(got, want, tol)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=str)
def test_sequence_kernel_matches_scan(case, rng):
  """Two batch blocks (batch 3 padded to 4), three time chunks (7 steps padded to 9)."""
  check_against_scan(case.cell, rng, 3, 7, [7, 3, 5], impl="sequence", block_b=2, block_t=3)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=str)
def test_step_kernel_matches_scan(case, rng):
  """Two hidden blocks where the cell allows it."""
  block_n = 3 if programs.program_for(case.cell).separable else None
  check_against_scan(case.cell, rng, 3, 4, [2, 4, 3], impl="step", block_n=block_n)


@pytest.mark.parametrize("batch,steps,hidden,lengths,block_b,block_t", [
    (1, 1, 8, None, None, None),
    (5, 7, 16, [7, 1, 4, 7, 6], 2, 3),
    (7, 5, 5, None, 3, 5),
])
@pytest.mark.parametrize("make", [lambda h: LSTMDef(4, h, PRESETS["V"]),
                                  lambda h: GRUDef(4, h, reset_after=True)], ids=["lstm", "gru"])
def test_shapes(make, batch, steps, hidden, lengths, block_b, block_t, rng):
  check_against_scan(make(hidden), rng, batch, steps, lengths, impl="sequence",
                     block_b=block_b, block_t=block_t)


@pytest.mark.parametrize("name,impl", [
    ("lstm-V", "sequence"), ("lstmp-FGR", "sequence"), ("gru-reset_after=True", "sequence"),
    ("gru-reset_after=False", "sequence"), ("lstm-CIFG", "step"), ("gru-reset_after=True", "step")])
def test_bfloat16(name, impl, rng):
  """bf16 inputs and weights, f32 state: within 2e-2 of the f32 scan on the same values."""
  cell = next(c.cell for c in KERNEL_CASES if c.name == name)
  params, xs, carry0, weights = random_inputs(cell, rng, 3, 6, jnp.bfloat16)
  lengths = jnp.array([6, 2, 5])
  kernel = lambda *a: recurrence(*a, backend="pallas", impl=impl)
  (final, ys), grads = value_and_grads(kernel, cell, params, xs, carry0, weights, lengths)
  assert ys.dtype == jnp.bfloat16 and jax.tree.leaves(grads)[0].dtype == jnp.bfloat16
  up = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)
  want = value_and_grads(recurrence, cell, up(params), up(xs), up(carry0), weights, lengths)
  assert_close(up(((final, ys), grads)), want, BF16_TOL)


def test_gpu_blocks_in_interpret_mode_fall_back_to_the_step_kernel(rng, caplog):
  """The GPU layout (hidden padded to a power of 2, 16-row batch blocks, the contraction in
  64-wide chunks) when the weights are too big for one CTA: the step kernel, logged once."""
  platforms.log_once.cache_clear()
  cell = LSTMDef(3, 100, PRESETS["NP"])
  with caplog.at_level(logging.WARNING, logger="kernels.platforms"):
    check_against_scan(cell, rng, 2, 3, [3, 2], platform="gpu", interpret=True)
    params, xs, carry0, _ = random_inputs(cell, rng, 2, 3)
    jax.eval_shape(lambda *a: recurrence(cell, *a, backend="pallas", platform="gpu",
                                                interpret=True),
                   params, cell.input_projection(params, xs), carry0)
  assert [r.getMessage() for r in caplog.records if "step kernel" in r.getMessage()] == [
      "Pallas: the recurrent weights of LSTMDef(hidden_size=100) take 262144 bytes, more than "
      "the 102400 the whole-sequence kernel may keep on chip on gpu; running the step kernel "
      "in a scan instead (the persistent kernel cannot: it is interpreted only on the cpu "
      "platform (as one cluster))."]


@pytest.mark.parametrize("case", [c for c in KERNEL_CASES if c.name in (
    "lstm-V", "lstmp-FGR", "gru-reset_after=True", "gru-reset_after=False")], ids=str)
def test_ops_match_their_references(case, rng):
  """The kernel ops against their plain-jnp references on the packed layout."""
  cell = case.cell
  program = programs.program_for(cell)
  params, xs, carry0, _ = random_inputs(cell, rng, 4, 5)
  n, ny = cell.hidden_size, cell.output_size
  packed = program.pack(params, cell.input_projection(params, xs), carry0, 4, n, ny)
  lengths = jnp.array([[5], [1], [3], [4]], jnp.int32)
  target = platforms.resolve("cpu")
  cfg = sequence.SequenceConfig(program, target, 2, 5, True)
  args = (packed.xp, packed.states0, packed.weights, packed.small)
  got = sequence.fused_sequence(cfg, *args, lengths)
  assert_close(got, sequence.sequence_reference(program, *args, lengths), F32_TOL)

  step_cfg = step.StepConfig(program, target, 2, n)
  valid = (lengths > 2).astype(jnp.int32)
  loss = lambda f: lambda *a: sum(jnp.sum(jnp.cos(s)) for s in f(*a, valid))
  step_args = (packed.xp[2], packed.states0, packed.weights, packed.small)
  got = jax.value_and_grad(loss(lambda *a: step.fused_step(step_cfg, *a)), (0, 1, 2, 3))(*step_args)
  want = jax.value_and_grad(loss(lambda *a: step.step_reference(program, *a)), (0, 1, 2, 3))(
      *step_args)
  assert_close(got, want, F32_TOL)


def test_backends_through_run_and_modules(rng):
  """backend="pallas" runs the kernels (interpreted here); "auto" is the scan on a CPU."""
  cell = GRUDef(4, 6, reset_after=False)
  params, xs, _, _ = random_inputs(cell, rng, 3, 5)
  xs = jnp.swapaxes(xs, 0, 1)
  lengths = jnp.array([5, 2, 4])
  want = run(cell, params, xs, lengths=lengths, reverse=True)
  assert_close(run(cell, params, xs, lengths=lengths, reverse=True, backend="pallas"), want,
               F32_TOL)
  auto = run(cell, params, xs, lengths=lengths, reverse=True, backend="auto")
  jax.tree.map(np.testing.assert_array_equal, auto, want)  # the very same scan

  model = LSTM(4, 6, bidirectional=True, variant="V", rngs=nnx.Rngs(0))
  kernel_model = LSTM(4, 6, bidirectional=True, variant="V", rngs=nnx.Rngs(0), backend="pallas")
  assert_close(kernel_model(xs, lengths=lengths), model(xs, lengths=lengths), F32_TOL)


def test_bad_arguments(rng):
  params, xs, carry0, _ = random_inputs(GRUDef(4, 6), rng, 3, 2)
  xp = GRUDef(4, 6).input_projection(params, xs)
  with pytest.raises(ValueError, match="cell must declare its gate math on per-gate blocks"):
    programs.program_for(object())
  with pytest.raises(ValueError, match="impl must be one of"):
    pallas(GRUDef(4, 6), params, xp, carry0, impl="fast")
  with pytest.raises(ValueError, match="block_n must divide the padded hidden size 6"):
    pallas(GRUDef(4, 6), params, xp, carry0, impl="step", block_n=4)
  with pytest.raises(ValueError, match="block_n must be the hidden size 6"):
    pallas(GRUDef(4, 6, reset_after=False), GRUDef(4, 6, False).init_params(
        jax.random.key(0)), xp, carry0, impl="step", block_n=3)
  with pytest.raises(ValueError, match="block_t must be the whole sequence"):
    pallas(GRUDef(4, 6), params, xp, carry0, platform="gpu", interpret=True, block_t=1)
  with pytest.raises(ValueError, match="block_b must be a power of 2 >= 16 on gpu"):
    pallas(GRUDef(4, 6), params, xp, carry0, platform="gpu", interpret=True, block_b=8)
  cho = GRUDef(4, 256, reset_after=False)
  assert rnn.supports(cho, "gpu") and rnn.supports(cho, "tpu") and not rnn.supports(cho, "cpu")
  assert not rnn.supports(GRUDef(4, 256, reset_after=False, layer_norm=True), "gpu")
  with pytest.raises(ValueError, match="hidden_size=256 is too large for the Pallas kernels"):
    pallas(cho, cho.init_params(jax.random.key(0)), jnp.zeros((2, 3, 768)),
                   cho.initial_carry((3,)), platform="gpu", interpret=True)
  with pytest.raises(ValueError, match="interpret must be set on the cpu platform"):
    pallas(GRUDef(4, 6), params, xp, carry0, platform="cpu", interpret=False)
  with pytest.raises(ValueError, match="backend must be one of"):
    run(GRUDef(4, 6), params, jnp.swapaxes(xs, 0, 1), backend="triton")


@pytest.mark.parametrize("device_kind,chip", [
    ("TPU v4", "v4"), ("TPU v5 lite", "v5e"), ("TPU v5e", "v5e"), ("TPU v5p", "v5p"),
    ("TPU v5", "v5p"), ("TPU v6 lite", "v6e"), ("TPU7x", "7x"), ("TPU v9", "v4")])
def test_tpu_chip_of_device_kind(device_kind, chip):
  assert platforms.tpu_chip(device_kind) == chip


@pytest.mark.parametrize("chip,dtype,expected", [
    ("v4", jnp.bfloat16, "sequence"), ("v4", jnp.float32, "step"),
    ("v5e", jnp.float32, "sequence"), ("v6e", jnp.float32, "sequence")])
def test_tpu_chip_sizes_the_vmem_budget(chip, dtype, expected, caplog):
  """LSTM R at hidden 1024 (8 MiB bf16, 16 MiB f32) stays in VMEM for the whole sequence where
  the chip holds it; v4's 16 MiB does not hold it in f32: the step kernel, logged."""
  platforms.log_once.cache_clear()
  cell = LSTMDef(8, 1024, PRESETS["NP"])
  params = {k: jax.ShapeDtypeStruct(s, dtype) for k, s in cell.param_shapes().items()}
  xp = jax.ShapeDtypeStruct((4, 8, 4 * 1024), dtype)
  carry0 = jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, dtype),
                        cell.initial_carry((8,)))
  with caplog.at_level(logging.WARNING, logger="kernels.platforms"):
    jax.eval_shape(lambda *a: recurrence(cell, *a, backend="pallas", platform="tpu",
                                         interpret=False, chip=chip), params, xp, carry0)
  messages = [r.getMessage() for r in caplog.records]
  assert messages == ([] if expected == "sequence" else [
      "Pallas: the recurrent weights of LSTMDef(hidden_size=1024) take 16777216 bytes, more "
      "than the 12582912 the whole-sequence kernel may keep on chip on tpu v4; running the "
      "step kernel in a scan instead."])
