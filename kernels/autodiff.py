"""The custom VJP that every sequence op shares (whole-sequence kernel, step kernels in a scan).

An op maps kernel-layout arrays (see `programs.Packed`) to the state sequences:

    op(cfg, xp [T, G, B, N], states0 ([B, w], ...), weights, small, lengths [B, 1] | None)
      -> (seqs ([T, B, w], ...) f32, finals ([B, w], ...) f32)

Its backward runs time in reverse from the saved state sequences (the gates are recomputed,
not stored) and returns d xp, d states0, d small and, per recurrent projection, d rprojs
[T, Gr, B, N]; every recurrent weight's gradient is then one matmul over all steps here,
outside the serial loop. `cfg` is a hashable config with a `program` attribute.
"""
import functools

import jax
import jax.numpy as jnp


def sequence_op(forward, backward):
  """Ties `forward(cfg, xp, states0, weights, small, lengths) -> (seqs, finals)` and
  `backward(cfg, xp, prev_states, d_seqs, d_finals, weights, small, lengths)
   -> (d_xp, d_rprojs or None (then d_xp's rproj gates), d_states0, d_small)` into one
  differentiable op."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def op(cfg, xp, states0, weights, small, lengths):
    return forward(cfg, xp, states0, weights, small, lengths)

  def op_fwd(cfg, xp, states0, weights, small, lengths):
    seqs, finals = forward(cfg, xp, states0, weights, small, lengths)
    return (seqs, finals), (xp, states0, weights, small, lengths, seqs)

  def op_bwd(cfg, residuals, cotangents):
    xp, states0, weights, small, lengths, seqs = residuals
    d_seqs, d_finals = cotangents
    program = cfg.program
    prev = tuple(jnp.concatenate([s0[None], s[:-1]], axis=0) for s0, s in zip(states0, seqs))
    d_xp, d_rprojs, d_states0, d_small = backward(cfg, xp, prev, d_seqs, d_finals, weights,
                                                  small, lengths)
    if d_rprojs is None:
      gates = program.rproj_gates
      d_rprojs = d_xp if len(gates) == program.num_gates else d_xp[:, jnp.array(gates)]
    d_weights = program.weight_grads(prev, d_rprojs, weights)
    cast = lambda ds, xs: tuple(d.astype(x.dtype) for d, x in zip(ds, xs))
    return (d_xp.astype(xp.dtype), cast(d_states0, states0), d_weights, cast(d_small, small),
            None)

  op.defvjp(op_fwd, op_bwd)
  return op
