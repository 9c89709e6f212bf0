"""The time loop of any cell on `jax.lax.scan` (the "scan" backend), with a backward pass that
follows the design: per step only the recurrent matmuls' transposes and the pointwise vjp run
in the reverse loop; each recurrent weight's gradient is one matmul over all steps after it
(over each segment, with remat).

One step t, with every option (each one off by default, when it costs nothing):

    carry = carry0 where resets[t] else carry          state resets
    rprojs = recurrent weights · (h ⊙ h_mask, ...)     variational recurrent dropout
    new, y = cell.pointwise(carry, xp[t], rprojs)
    new, y = keep ⊙ carry + (1 − keep) ⊙ new           zoneout (y = the zoned h)
    new, y = (carry, 0) where t ≥ lengths              variable lengths

In the backward pass grad_clip clips the carry's cotangent that each step passes to the one
before it (Graves 2013); the cotangent a reset sends to carry0 is not clipped. The masks get no
gradient. remat keeps only every k-th carry in the forward pass and recomputes each segment of k
steps inside the backward.

Axis letters: T time, B batch. Everything here is time-major.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp

from rnn_research.cells import heads
from rnn_research.cells.base import CellDef
from rnn_research.layers.options import Options, segment_length


def scan(cell: CellDef, params, xp, carry0, lengths, unroll: int, options: Options):
  """Runs the recurrence over precomputed input projections (the "scan" backend of
  `layers.recurrence`, which documents the options).

  Args:
    cell: the cell definition.
    params: the cell's parameters.
    xp: [T, B, width] `cell.input_projection` of the inputs.
    carry0: the carry at t = 0 (leaves [B, ...]).
    lengths: None or int [B]; steps t >= lengths[b] leave sequence b's carry unchanged and
      output zeros.
    unroll: steps per loop iteration of the scan.
    options: the checked `layers.options.Options`.

  Returns:
    (final carry, ys [T, B, out]).
  """
  num_steps, batch = xp.shape[:2]
  segment = segment_length(num_steps, options.remat)
  steps, consts = {}, {}
  if options.resets is not None:
    steps["reset"] = options.resets
  if options.h_mask is not None:
    consts["h_mask"] = options.h_mask
  keeps, per_step = options.keeps, ()
  if keeps is not None:
    per_step = tuple(k is not None and k.shape[0] > 1 for k in keeps)
    steps["keep"] = tuple(k if s else None for k, s in zip(keeps, per_step))
    consts["keep"] = tuple(None if s or k is None else k[0] for k, s in zip(keeps, per_step))
  config = _Config(cell, unroll, options.grad_clip, segment, per_step)
  weights = {w: params[w] for w in cell.recurrent_weights}
  valid = _valid_steps(num_steps, lengths)
  if segment is not None and num_steps % segment:
    # Steps that change nothing in front (at the end they would clip d_final with grad_clip).
    front = -num_steps % segment
    pad = lambda a: jnp.pad(a, [(front, 0)] + [(0, 0)] * (a.ndim - 1))
    valid = pad(jnp.ones((num_steps, batch), bool) if valid is None else valid)
    final, ys = _recurrence(config, weights, cell.pointwise_params(params), pad(xp), carry0,
                            valid, jax.tree.map(pad, steps), consts)
    return final, ys[front:]
  return _recurrence(config, weights, cell.pointwise_params(params), xp, carry0, valid, steps,
                     consts)


# -- one step -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Config:
  """The static part: hashable, a nondiff argument of the custom_vjp."""
  cell: CellDef
  unroll: int
  grad_clip: float | None
  segment: int | None
  keep_per_step: tuple[bool, ...]  # per zoneout state: weights vary over time (else constant)


def _valid_steps(num_steps, lengths):
  """[T, B] bool, or None when every step is valid."""
  if lengths is None:
    return None
  return jnp.arange(num_steps)[:, None] < lengths[None, :]


def _enter(carry, carry0, step_t):
  """The carry entering the step: carry0 in the rows that reset."""
  if "reset" not in step_t:
    return carry
  reset = step_t["reset"][:, None]
  return jax.tree.map(lambda c0, c: jnp.where(reset, c0, c), carry0, carry)


def _recurrent_inputs(config, consts, carry):
  cell = config.cell
  if "h_mask" in consts:
    carry = cell.drop_recurrent(carry, consts["h_mask"])
  return cell.recurrent_inputs(carry)


def _projections(config, weights, consts, carry):
  if "h_mask" not in consts:
    return config.cell.recurrent_projections(weights, carry)
  rinputs = _recurrent_inputs(config, consts, carry)
  return tuple(heads.matmul(r, weights[w]) for r, w in zip(rinputs, config.cell.recurrent_weights))


def _update(config, consts, pointwise_params, carry, xp_t, rprojs_t, valid_t, step_t):
  """The step after the recurrent matmuls: gate math, zoneout, lengths -> (carry, y)."""
  cell = config.cell
  new_carry, y = cell.pointwise(pointwise_params, carry, xp_t, rprojs_t)
  if "keep" in consts:
    keeps = tuple(s if per_step else c for s, c, per_step in
                  zip(step_t["keep"], consts["keep"], config.keep_per_step))
    new_carry, y = cell.zoneout(carry, new_carry, keeps if len(keeps) == 2 else keeps[0])
  if valid_t is None:
    return new_carry, y
  keep = valid_t[:, None]
  new_carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
  return new_carry, jnp.where(keep, y, jnp.zeros_like(y))


# -- forward and backward -----------------------------------------------------------------------

def _scan_forward(config, weights, pointwise_params, xp, init, carry0, valid, steps, consts,
                  save_residuals):
  """The loop from carry `init` (carry0 is what resets restore)."""
  def step(carry, inputs):
    xp_t, valid_t, step_t = inputs
    carry = _enter(carry, carry0, step_t)
    rprojs = _projections(config, weights, consts, carry)
    new_carry, y = _update(config, consts, pointwise_params, carry, xp_t, rprojs, valid_t,
                           step_t)
    return new_carry, ((y, carry, rprojs) if save_residuals else y)

  return _time_loop(step, init, (xp, valid, steps), valid, config.unroll)


def _steps_to_run(valid):
  """The steps up to the last one where a sequence is valid (valid: [T, B]): a traced int, or
  None when every step runs."""
  if valid is None:
    return None
  return jnp.max(jnp.where(jnp.any(valid, axis=1), jnp.arange(1, valid.shape[0] + 1), 0))


def _time_loop(body, init, xs, valid, unroll: int, reverse: bool = False):
  """`jax.lax.scan(body, init, xs)` over the leading (time) axis that skips the steps after
  every sequence has ended: they would change no carry, so a batch padded far beyond its
  longest sequence costs no more loop iterations (one padded length can then serve every
  batch, and is compiled once). Outputs at skipped steps are zeros. Runs the plain scan when
  there are no lengths or with `unroll` > 1."""
  num_steps = _steps_to_run(valid)
  if num_steps is None or unroll > 1:
    return jax.lax.scan(body, init, xs, reverse=reverse, unroll=unroll)
  length = jax.tree.leaves(xs)[0].shape[0]
  at = lambda t: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), xs)
  out_shapes = jax.eval_shape(body, init, at(0))[1]
  outputs = jax.tree.map(lambda s: jnp.zeros((length, *s.shape), s.dtype), out_shapes)

  def iteration(i, loop_state):
    carry, outputs = loop_state
    t = num_steps - 1 - i if reverse else i
    carry, out = body(carry, at(t))
    outputs = jax.tree.map(lambda o, v: jax.lax.dynamic_update_index_in_dim(o, v, t, 0),
                           outputs, out)
    return carry, outputs

  return jax.lax.fori_loop(0, num_steps, iteration, (init, outputs))


def _segments(a, segment):
  """[T, ...] -> [T / segment, segment, ...]."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // segment, segment, *x.shape[1:]), a)


def _unsegment(a):
  return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), a)


def _remat_forward(config, weights, pointwise_params, xp, carry0, valid, steps, consts):
  """-> (final carry, (ys [T/k, k, B, out], the carry entering each segment))."""
  def run_segment(carry, inputs):
    xp_s, valid_s, steps_s = inputs
    final, ys = _scan_forward(config, weights, pointwise_params, xp_s, carry, carry0, valid_s,
                              steps_s, consts, False)
    return final, (ys, carry)

  return jax.lax.scan(run_segment, carry0, _segments((xp, valid, steps), config.segment))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrence(config, weights, pointwise_params, xp, carry0, valid, steps, consts):
  """valid: None or bool [T, B], False past each sequence's length."""
  if config.segment is not None:
    final, (ys, _) = _remat_forward(config, weights, pointwise_params, xp, carry0, valid, steps,
                                    consts)
    return final, _unsegment(ys)
  return _scan_forward(config, weights, pointwise_params, xp, carry0, carry0, valid, steps,
                       consts, False)


def _recurrence_fwd(config, weights, pointwise_params, xp, carry0, valid, steps, consts):
  if config.segment is not None:
    final, (ys, saved) = _remat_forward(config, weights, pointwise_params, xp, carry0, valid,
                                        steps, consts)
    ys = _unsegment(ys)
  else:
    final, (ys, carries, rprojs) = _scan_forward(
        config, weights, pointwise_params, xp, carry0, carry0, valid, steps, consts, True)
    saved = (carries, rprojs)
  return (final, ys), (weights, pointwise_params, xp, carry0, valid, steps, consts, saved)


def _backward_step(config, transposed, pointwise_params, consts):
  """The reverse loop's body on (d carry, d pointwise params[, d carry0 from resets])."""
  cell = config.cell
  add = lambda a, b: jax.tree.map(jnp.add, a, b)

  def step(acc, inputs):
    d_carry, d_pointwise_params = acc[:2]
    carry, xp_t, rprojs_t, valid_t, step_t, dy_t = inputs
    _, pointwise_vjp = jax.vjp(
        lambda p, c, x, r: _update(config, consts, p, c, x, r, valid_t, step_t),
        pointwise_params, carry, xp_t, rprojs_t)
    d_params_t, d_carry_prev, d_xp_t, d_rprojs_t = pointwise_vjp((d_carry, dy_t))
    d_rinputs = tuple(heads.matmul_transposed(dr, transposed[w])
                      for dr, w in zip(d_rprojs_t, cell.recurrent_weights))
    _, inputs_vjp = jax.vjp(lambda c: _recurrent_inputs(config, consts, c), carry)
    d_carry_prev = add(d_carry_prev, inputs_vjp(d_rinputs)[0])
    resets = ()
    if "reset" in step_t:  # in reset rows the carry came from carry0, not the previous step
      reset = step_t["reset"][:, None]
      resets = (jax.tree.map(lambda a, d: a + jnp.where(reset, d, 0), acc[2], d_carry_prev),)
      d_carry_prev = jax.tree.map(lambda d: jnp.where(reset, jnp.zeros_like(d), d),
                                  d_carry_prev)
    if config.grad_clip is not None:
      clip = config.grad_clip
      d_carry_prev = jax.tree.map(lambda d: jnp.clip(d, -clip, clip), d_carry_prev)
    return (d_carry_prev, add(d_pointwise_params, d_params_t), *resets), (d_xp_t, d_rprojs_t)

  return step


def _skip_ended(config, acc, valid):
  """What the reverse loop's skipped steps (`_time_loop`: all sequences ended) do to its
  accumulator: each passes d carry on unchanged but for grad_clip's clipping."""
  if config.grad_clip is None or valid is None or config.unroll > 1:
    return acc
  clip = config.grad_clip
  skipped = _steps_to_run(valid) < valid.shape[0]
  d_carry = jax.tree.map(lambda d: jnp.where(skipped, jnp.clip(d, -clip, clip), d), acc[0])
  return (d_carry, *acc[1:])


def _weight_grads(config, consts, weights, carries, d_rprojs):
  """dW = Σ_t r_tᵀ · d(r_t W): one [rows, T·B] x [T·B, cols] matmul per weight."""
  rinputs = jax.vmap(lambda c: _recurrent_inputs(config, consts, c))(carries)
  return {w: heads.weight_grad(r, dr, weights[w].shape)
          for w, r, dr in zip(config.cell.recurrent_weights, rinputs, d_rprojs)}


def _recurrence_bwd(config, residuals, cotangents):
  weights, pointwise_params, xp, carry0, valid, steps, consts, saved = residuals
  d_final, d_ys = cotangents
  # Transposed once, into its own buffer: a dot against R.T inside the loop ran at half speed.
  transposed = {w: jax.lax.optimization_barrier(heads.transpose(weights[w]))
                for w in config.cell.recurrent_weights}
  step = _backward_step(config, transposed, pointwise_params, consts)
  init = (d_final, jax.tree.map(jnp.zeros_like, pointwise_params))
  if "reset" in steps:
    init += (jax.tree.map(jnp.zeros_like, carry0),)

  if config.segment is None:
    carries, rprojs = saved
    acc, (d_xp, d_rprojs) = _time_loop(
        step, _skip_ended(config, init, valid), (carries, xp, rprojs, valid, steps, d_ys),
        valid, config.unroll, reverse=True)
    d_weights = _weight_grads(config, consts, weights, carries, d_rprojs)
  else:
    def segment_backward(outer, inputs):
      acc, d_weights = outer
      start, xp_s, valid_s, steps_s, dy_s = inputs
      _, (_, carries, rprojs) = _scan_forward(config, weights, pointwise_params, xp_s, start,
                                              carry0, valid_s, steps_s, consts, True)
      acc, (d_xp_s, d_rprojs) = _time_loop(
          step, _skip_ended(config, acc, valid_s), (carries, xp_s, rprojs, valid_s, steps_s,
                                                    dy_s), valid_s, config.unroll, reverse=True)
      d_weights = jax.tree.map(jnp.add, d_weights,
                               _weight_grads(config, consts, weights, carries, d_rprojs))
      return (acc, d_weights), d_xp_s

    zero_weights = jax.tree.map(jnp.zeros_like, weights)
    (acc, d_weights), d_xp = jax.lax.scan(
        segment_backward, (init, zero_weights),
        (saved, *_segments((xp, valid, steps, d_ys), config.segment)), reverse=True)
    d_xp = _unsegment(d_xp)
  d_carry0 = acc[0] if len(acc) == 2 else jax.tree.map(jnp.add, acc[0], acc[2])
  return d_weights, acc[1], d_xp, d_carry0, None, None, None


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
