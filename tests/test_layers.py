"""The time loop: gradients of the custom backward pass, variable lengths, reverse,
bidirectional, time-major, carries across chunks, and bad inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import CASES, D, H, random_params, rel_err
from rnn_research.cells import LSTMDef, PRESETS
from rnn_research.layers import reverse_sequences, run, run_bidirectional


def plain_scan(cell, params, xs, carry0=None):
  """The reference loop: `cell.step` under lax.scan, differentiated by plain autodiff."""
  carry0 = cell.initial_carry((xs.shape[0],), xs.dtype) if carry0 is None else carry0
  final, ys = jax.lax.scan(lambda c, x: cell.step(params, c, x), carry0, jnp.swapaxes(xs, 0, 1))
  return jnp.swapaxes(ys, 0, 1), final


def loss_fn(runner, cell, weights):
  """A scalar that reads every output and the final carry with random weights."""
  def loss(params, xs, carry0):
    ys, final = runner(cell, params, xs, carry0)
    return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))
  return loss


def with_carry(runner, **kwargs):
  return lambda cell, p, xs, c: runner(cell, p, xs, initial_carry=c, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_match_autodiff_of_plain_scan(case, rng):
  cell = case.cell
  params = random_params(cell, rng, np.float32)
  xs = jnp.asarray(rng.standard_normal((3, 6, cell.in_features)), jnp.float32)
  carry0 = jax.tree.map(lambda c: jnp.asarray(rng.standard_normal(c.shape), jnp.float32),
                        cell.initial_carry((3,)))
  weights = jnp.asarray(rng.standard_normal((3, 6, cell.output_size)), jnp.float32)
  grads = jax.grad(loss_fn(with_carry(run), cell, weights), argnums=(0, 1, 2))(params, xs, carry0)
  expected = jax.grad(loss_fn(plain_scan, cell, weights), argnums=(0, 1, 2))(params, xs, carry0)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("case", [c for c in CASES if c.name in
                                  ("lstm-V", "lstm-FGR", "lstmp-V", "gru-reset_after=True",
                                   "gru-reset_after=False", "mgu", "mut3", "elman-tanh")], ids=str)
def test_gradients_match_finite_differences(case, rng):
  """Directional derivatives in float64, with lengths, so masking is differentiated too."""
  cell = case.cell
  params = random_params(cell, rng, np.float64)
  xs = jnp.asarray(rng.standard_normal((3, 5, cell.in_features)))
  lengths = jnp.array([5, 2, 4])
  weights = jnp.asarray(rng.standard_normal((3, 5, cell.output_size)))
  loss = loss_fn(with_carry(run, lengths=lengths), cell, weights)
  carry0 = cell.initial_carry((3,), jnp.float64)
  grads = jax.grad(loss, argnums=(0, 1))(params, xs, carry0)
  for _ in range(3):
    direction = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), (params, xs))
    shifted = lambda s: loss(*jax.tree.map(lambda a, d: a + s * d, (params, xs), direction), carry0)
    eps = 1e-6
    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    assert abs(numeric - analytic) / abs(analytic) < 1e-6


def _lstm(rng, variant="V", dtype=np.float64):
  cell = LSTMDef(D, H, PRESETS[variant])
  return cell, random_params(cell, rng, dtype)


def test_padding_changes_nothing(rng):
  cell, params = _lstm(rng)
  lengths = jnp.array([7, 3, 1, 5])
  xs = rng.standard_normal((4, 7, D))
  garbage = np.where(np.arange(7)[None, :, None] < np.asarray(lengths)[:, None, None], xs,
                     1e3 * rng.standard_normal(xs.shape))
  ys, final = run(cell, params, jnp.asarray(xs), lengths=lengths)
  ys2, final2 = run(cell, params, jnp.asarray(garbage), lengths=lengths)
  assert np.array_equal(ys, ys2) and all(np.array_equal(a, b) for a, b in zip(final, final2))
  valid = np.arange(7)[None, :] < np.asarray(lengths)[:, None]
  assert np.all(np.asarray(ys)[~valid] == 0)
  for b, n in enumerate(np.asarray(lengths)):  # each sequence alone, cut at its own end
    alone_ys, alone_final = run(cell, params, jnp.asarray(xs[b:b + 1, :n]))
    assert rel_err(ys[b:b + 1, :n], alone_ys) < 1e-12
    assert rel_err(final.c[b], alone_final.c[0]) < 1e-12


def test_reverse_runs_each_valid_span_backwards(rng):
  cell, params = _lstm(rng, "NP")
  lengths = np.array([6, 4])
  xs = rng.standard_normal((2, 6, D))
  ys, final = run(cell, params, jnp.asarray(xs), lengths=jnp.asarray(lengths), reverse=True)
  for b, n in enumerate(lengths):
    flipped_ys, flipped_final = run(cell, params, jnp.asarray(xs[b:b + 1, :n][:, ::-1]))
    assert rel_err(ys[b, :n], flipped_ys[0, ::-1]) < 1e-12
    assert rel_err(final.h[b], flipped_final.h[0]) < 1e-12
  assert np.all(np.asarray(ys)[1, 4:] == 0)


def test_reverse_sequences_keeps_padding_in_place():
  xs = jnp.arange(10.0).reshape(5, 2, 1)
  out = reverse_sequences(xs, jnp.array([3, 5]))[..., 0]
  assert out[:, 0].tolist() == [4.0, 2.0, 0.0, 6.0, 8.0]
  assert out[:, 1].tolist() == [9.0, 7.0, 5.0, 3.0, 1.0]


def test_bidirectional_is_two_single_direction_runs(rng):
  cell, forward = _lstm(rng)
  _, backward = _lstm(rng)
  lengths = jnp.array([5, 2, 4])
  xs = jnp.asarray(rng.standard_normal((3, 5, D)))
  ys, (final_f, final_b) = run_bidirectional(cell, forward, backward, xs, lengths=lengths)
  ys_f, _ = run(cell, forward, xs, lengths=lengths)
  ys_b, _ = run(cell, backward, xs, lengths=lengths, reverse=True)
  assert np.array_equal(ys, jnp.concatenate([ys_f, ys_b], -1))
  assert ys.shape == (3, 5, 2 * H)


def test_time_major_matches_batch_major(rng):
  cell, params = _lstm(rng, "FGR")
  xs = jnp.asarray(rng.standard_normal((3, 5, D)))
  ys, final = run(cell, params, xs, lengths=jnp.array([5, 1, 3]))
  ys_t, final_t = run(cell, params, jnp.swapaxes(xs, 0, 1), lengths=jnp.array([5, 1, 3]),
                      time_major=True)
  assert np.array_equal(ys, jnp.swapaxes(ys_t, 0, 1))
  assert all(np.array_equal(a, b) for a, b in zip(final, final_t))


@pytest.mark.parametrize("unroll", [1, 3])
def test_chunks_with_carried_state_equal_one_run(rng, unroll):
  """Truncated BPTT: running two chunks, the second from the first's final carry."""
  cell, params = _lstm(rng)
  xs = jnp.asarray(rng.standard_normal((2, 8, D)))
  whole, final = run(cell, params, xs, unroll=unroll)
  first, carry = run(cell, params, xs[:, :5], unroll=unroll)
  second, final2 = run(cell, params, xs[:, 5:], initial_carry=carry, unroll=unroll)
  assert rel_err(jnp.concatenate([first, second], 1), whole) < 1e-12
  assert rel_err(final2.c, final.c) < 1e-12


def test_mixed_precision_inputs_promote(rng):
  cell, params = _lstm(rng, dtype=np.float32)
  ys, final = run(cell, params, jnp.asarray(rng.standard_normal((2, 3, D)), jnp.bfloat16))
  assert ys.dtype == jnp.float32 and final.c.dtype == jnp.float32


@pytest.mark.parametrize("kwargs, message", [
    (dict(xs=np.zeros((4, D))), r"xs must be \[batch, time, features\]"),
    (dict(xs=np.zeros((2, 4, D + 1))), "in_features=5"),
    (dict(xs=np.zeros((2, 4, D)), time_major=True, lengths=np.array([1, 2])), r"shape \[batch\]=\(4,\)"),
    (dict(lengths=np.array([0, 3])), r"lengths must lie in \[1, time=4\]"),
    (dict(lengths=np.array([5, 3])), r"lengths must lie in \[1, time=4\]"),
    (dict(lengths=np.array([1.0, 3.0])), "lengths must be integers"),
    (dict(backend="cuda"), "backend must be one of"),
    (dict(initial_carry=np.zeros((2, H))), "initial_carry must have the structure"),
    (dict(xs=np.zeros((2, 4, D), np.int32)), "floating point"),
])
def test_bad_inputs_name_the_argument(kwargs, message, rng):
  cell, params = _lstm(rng)
  args = dict(xs=np.zeros((2, 4, D)))
  args.update(kwargs)
  xs = jnp.asarray(args.pop("xs"))
  with pytest.raises(ValueError, match=message):
    run(cell, params, xs, **args)


def test_lengths_are_checked_inside_jit_for_shape(rng):
  cell, params = _lstm(rng)
  f = jax.jit(lambda xs, lengths: run(cell, params, xs, lengths=lengths)[0])
  with pytest.raises(ValueError, match="lengths must be integers of shape"):
    f(jnp.zeros((2, 4, D)), jnp.array([1, 2, 3]))
  assert f(jnp.ones((2, 4, D)), jnp.array([1, 4])).shape == (2, 4, H)
