"""The custom VJP that every sequence op shares (whole-sequence kernel, step kernels in a scan).

An op maps kernel-layout arrays (see `programs.Packed`) to the state sequences:

    op(cfg, xp [T, G, B, N], states0 ([B, w], ...), weights, small, extras)
      -> (seqs ([T, B, w], ...) f32, finals ([B, w], ...) f32)

`extras` (see `Extras`) holds the per-call options: lengths, resets, the recurrent dropout mask
and the zoneout weights; none of them is differentiated.

Its backward runs time in reverse from the saved state sequences (the gates are recomputed,
not stored) and returns d xp, d states0, d small and, per recurrent projection, d rprojs
[T, Gr, B, N]; every recurrent weight's gradient is then one matmul over all steps here,
outside the serial loop. `cfg` is a hashable config with a `program` attribute.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Extras(NamedTuple):
  """A kernel call's options, in the kernels' layout (batch and lanes padded); None = off.

  lengths: int32 [B, 1]; a row's steps t >= lengths stay unchanged.
  resets: int32 [T, B, 1]; nonzero: the state entering step t is states0.
  h_mask: f32 [B, Ny]; multiplies h where it enters the recurrent matmuls.
  keeps: per state None, f32 [T, B, w] (zoneout weights per step) or [1, w] (one for all
    steps and rows, e.g. the rate at evaluation): new = keep·entering + (1 − keep)·new.
  """
  lengths: jax.Array | None = None
  resets: jax.Array | None = None
  h_mask: jax.Array | None = None
  keeps: tuple | None = None


def entering_states(program, states0, seqs, resets):
  """The states entering each step: the previous step's, or states0 where a reset is set."""
  prev = tuple(jnp.concatenate([s0[None], s[:-1]], axis=0) for s0, s in zip(states0, seqs))
  return program.enter(prev, tuple(s0[None] for s0 in states0),
                       None if resets is None else resets > 0)


def sequence_op(forward, backward):
  """Ties `forward(cfg, xp, states0, weights, small, extras) -> (seqs, finals)` and
  `backward(cfg, xp, entering, d_seqs, d_finals, weights, small, extras)
   -> (d_xp, d_rprojs or None (then d_xp's rproj gates), d_states0, d_small)` into one
  differentiable op."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def op(cfg, xp, states0, weights, small, extras):
    return forward(cfg, xp, states0, weights, small, extras)

  def op_fwd(cfg, xp, states0, weights, small, extras):
    seqs, finals = forward(cfg, xp, states0, weights, small, extras)
    return (seqs, finals), (xp, states0, weights, small, extras, seqs)

  def op_bwd(cfg, residuals, cotangents):
    xp, states0, weights, small, extras, seqs = residuals
    d_seqs, d_finals = cotangents
    program = cfg.program
    entering = entering_states(program, states0, seqs, extras.resets)
    d_xp, d_rprojs, d_states0, d_small = backward(cfg, xp, entering, d_seqs, d_finals, weights,
                                                  small, extras)
    if d_rprojs is None:
      gates = program.rproj_gates
      d_rprojs = d_xp if len(gates) == program.num_gates else d_xp[:, jnp.array(gates)]
    mask = None if extras.h_mask is None else extras.h_mask[None]
    d_weights = program.weight_grads(program.rinputs(entering, mask), d_rprojs, weights)
    cast = lambda ds, xs: tuple(d.astype(x.dtype) for d, x in zip(ds, xs))
    return (d_xp.astype(xp.dtype), cast(d_states0, states0), d_weights, cast(d_small, small),
            None)

  op.defvjp(op_fwd, op_bwd)
  return op


def split_reset(d_entering, d_states0, reset, grad_clip):
  """Backward of `program.enter` for one step: the cotangent of the entering states goes to
  states0 in reset rows (added to d_states0) and to the previous step elsewhere, clipped to
  ±grad_clip -> (d previous states, d_states0)."""
  d_prev = d_entering
  if reset is not None:
    d_states0 = tuple(a + jnp.where(reset, d, 0) for a, d in zip(d_states0, d_entering))
    d_prev = tuple(jnp.where(reset, 0, d) for d in d_entering)
  if grad_clip is not None:
    d_prev = tuple(jnp.clip(d, -grad_clip, grad_clip) for d in d_prev)
  return d_prev, d_states0
