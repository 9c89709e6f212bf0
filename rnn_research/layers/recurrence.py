"""The time loop of any cell on `jax.lax.scan`, with a backward pass that follows the design:
per step only the recurrent matmuls' transposes and the pointwise vjp run in the reverse loop;
each recurrent weight's gradient is one matmul over all steps after it.

Axis letters: T time, B batch. Everything here is time-major.
"""
import functools

import jax
import jax.numpy as jnp

from rnn_research.cells.base import CellDef


def recurrence(cell: CellDef, params, xp, carry0, lengths=None, unroll: int = 1):
  """Runs the recurrence over precomputed input projections.

  Args:
    cell: the cell definition.
    params: the cell's parameters.
    xp: [T, B, width] `cell.input_projection` of the inputs.
    carry0: the carry at t = 0 (leaves [B, ...]).
    lengths: optional int [B]; steps t >= lengths[b] leave sequence b's carry unchanged and
      output zeros.
    unroll: steps per loop iteration of the scan.

  Returns:
    (final carry, ys [T, B, out]).
  """
  weights = {w: params[w] for w in cell.recurrent_weights}
  return _recurrence(cell, unroll, weights, cell.pointwise_params(params), xp, carry0, lengths)


def _valid_steps(num_steps, lengths):
  """[T, B] bool, or None when every step is valid."""
  if lengths is None:
    return None
  return jnp.arange(num_steps)[:, None] < lengths[None, :]


def _masked_pointwise(cell, pointwise_params, carry, xp_t, rprojs_t, valid_t):
  new_carry, y = cell.pointwise(pointwise_params, carry, xp_t, rprojs_t)
  if valid_t is None:
    return new_carry, y
  keep = valid_t[:, None]
  new_carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
  return new_carry, jnp.where(keep, y, jnp.zeros_like(y))


def _scan_forward(cell, unroll, weights, pointwise_params, xp, carry0, lengths, save_residuals):
  def step(carry, inputs):
    xp_t, valid_t = inputs
    rprojs = cell.recurrent_projections(weights, carry)
    new_carry, y = _masked_pointwise(cell, pointwise_params, carry, xp_t, rprojs, valid_t)
    return new_carry, ((y, carry, rprojs) if save_residuals else y)

  return jax.lax.scan(step, carry0, (xp, _valid_steps(xp.shape[0], lengths)), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recurrence(cell, unroll, weights, pointwise_params, xp, carry0, lengths):
  return _scan_forward(cell, unroll, weights, pointwise_params, xp, carry0, lengths, False)


def _recurrence_fwd(cell, unroll, weights, pointwise_params, xp, carry0, lengths):
  final, (ys, carries, rprojs) = _scan_forward(
      cell, unroll, weights, pointwise_params, xp, carry0, lengths, True)
  return (final, ys), (weights, pointwise_params, xp, lengths, carries, rprojs)


def _recurrence_bwd(cell, unroll, residuals, cotangents):
  weights, pointwise_params, xp, lengths, carries, rprojs = residuals
  d_final, d_ys = cotangents
  add = lambda a, b: jax.tree.map(jnp.add, a, b)

  # Transposed once, into its own buffer: a dot against R.T inside the loop ran at half speed.
  transposed = {w: jax.lax.optimization_barrier(weights[w].T) for w in cell.recurrent_weights}

  def step(acc, inputs):
    d_carry, d_pointwise_params = acc
    carry, xp_t, rprojs_t, valid_t, dy_t = inputs
    _, pointwise_vjp = jax.vjp(
        lambda p, c, x, r: _masked_pointwise(cell, p, c, x, r, valid_t),
        pointwise_params, carry, xp_t, rprojs_t)
    d_params_t, d_carry_prev, d_xp_t, d_rprojs_t = pointwise_vjp((d_carry, dy_t))
    d_rinputs = tuple(dr @ transposed[w] for dr, w in zip(d_rprojs_t, cell.recurrent_weights))
    _, inputs_vjp = jax.vjp(cell.recurrent_inputs, carry)
    d_carry_prev = add(d_carry_prev, inputs_vjp(d_rinputs)[0])
    return (d_carry_prev, add(d_pointwise_params, d_params_t)), (d_xp_t, d_rprojs_t)

  zero_params = jax.tree.map(jnp.zeros_like, pointwise_params)
  valid = _valid_steps(xp.shape[0], lengths)
  (d_carry0, d_pointwise_params), (d_xp, d_rprojs) = jax.lax.scan(
      step, (d_final, zero_params), (carries, xp, rprojs, valid, d_ys), reverse=True,
      unroll=unroll)
  # dW = sum_t r_tᵀ · d(r_t W): one [rows, T·B] x [T·B, cols] matmul per weight.
  rinputs = jax.vmap(cell.recurrent_inputs)(carries)
  d_weights = {w: jnp.einsum("tbi,tbj->ij", r, dr)
               for w, r, dr in zip(cell.recurrent_weights, rinputs, d_rprojs)}
  return d_weights, d_pointwise_params, d_xp, d_carry0, None


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
