"""Fused step kernel: one time step (every recurrent matmul + the gate math + the state update)
in one kernel, called inside `lax.scan`; the fallback when the recurrent weights do not fit on
chip for the whole-sequence kernel.

Grid (batch blocks, hidden blocks). A program computes all gates of its hidden columns, so the
gate pre-activations never leave the chip; it reads the full recurrent inputs [bb, w_src] and
a column block [w_src, bn] of each weight (on GPU in chunks of the contraction, to bound
shared memory). Cells whose gate math mixes columns (LSTMP's projection, the Cho GRU's
(r ⊙ h) R_n) run with one hidden block.

The backward kernel recomputes the step and writes d xs, d rprojs and the direct d states;
the transposed recurrent matmuls d rprojs @ Rᵀ then run as ordinary XLA matmuls.

    fused_step(cfg, xs [G, B, N], states, weights, small, valid [B, 1] int | None) -> states
    stepped_sequence(cfg, xp [T, G, B, N], states0, ...) -> (seqs, finals), as `sequence`
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels import autodiff
from kernels.platforms import Target, block_spec
from kernels.programs import Packed, Program

f32 = jnp.float32
GPU_HIDDEN_BLOCK = 64
TPU_HIDDEN_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static arguments of the step kernels: block_n is the hidden (column) block."""
  program: Program
  target: Target
  block_b: int
  block_n: int


def hidden_block(program: Program, target: Target, packed: Packed, block_n: int | None) -> int:
  """The column block: the whole hidden size unless the program is column-separable."""
  n = packed.xp.shape[-1]
  if not program.separable:
    if block_n not in (None, n):
      raise ValueError(f"block_n must be the hidden size {n} for {program.cell} (its gate "
                       f"math mixes hidden columns), got {block_n}")
    return n
  if block_n is None:
    block_n = {"gpu": min(n, GPU_HIDDEN_BLOCK),
               "tpu": TPU_HIDDEN_BLOCK if n % TPU_HIDDEN_BLOCK == 0 else min(n, 128)}.get(
                   target.platform, n)
  if n % block_n:
    raise ValueError(f"block_n must divide the padded hidden size {n}, got {block_n}")
  return block_n


def _columns(cfg, ref):
  """This program's hidden columns of a full-width [bb, w] state ref."""
  if not cfg.program.separable or ref.shape[-1] == cfg.block_n:
    return ref[...]
  start = pl.multiple_of(pl.program_id(1) * cfg.block_n, cfg.block_n)
  return ref[:, pl.ds(start, cfg.block_n)]


def _rprojs(cfg, state_refs, weight_refs):
  """Per gate Σ states[src] @ w[:, columns], the contraction chunked on GPU."""
  p = cfg.program
  out = [None] * p.num_gates
  for (src, gate), w_ref in zip(p.terms, weight_refs):
    s_ref = state_refs[src]
    k, bk = w_ref.shape[0], cfg.target.k_block(w_ref.shape[0])
    dot = lambda s, w: jnp.dot(s.astype(w.dtype), w, preferred_element_type=f32)
    if bk == k:
      term = dot(s_ref[...], w_ref[...])
    else:
      def chunk(c, acc, s_ref=s_ref, w_ref=w_ref, bk=bk):
        k0 = pl.multiple_of(c * bk, bk)
        return acc + dot(s_ref[:, pl.ds(k0, bk)], w_ref[pl.ds(k0, bk), :])
      term = jax.lax.fori_loop(jnp.int32(0), jnp.int32(k // bk), chunk,
                               jnp.zeros((s_ref.shape[0], w_ref.shape[1]), f32))
    out[gate] = term if out[gate] is None else out[gate] + term
  return tuple(out)


def _split(refs, sizes):
  out, refs = [], list(refs)
  for size in sizes:
    out.append(tuple(refs[:size]))
    refs = refs[size:]
  return out


def _forward_kernel(*refs, cfg: StepConfig, masked: bool, counts):
  p = cfg.program
  ns, nw, nsm = counts
  valid_ref, (xp_ref,), state_refs, weight_refs, small_refs, out_refs = _split(
      refs, (int(masked), 1, ns, nw, nsm, ns))
  xs = tuple(xp_ref[k].astype(f32) for k in range(p.num_gates))
  states = tuple(_columns(cfg, r) for r in state_refs)
  valid = valid_ref[0][...] > 0 if masked else None
  small = tuple(r[...] for r in small_refs)
  new = p.step(small, states, xs, _rprojs(cfg, state_refs, weight_refs), valid)
  for ref, s in zip(out_refs, new):
    ref[...] = s


def _backward_kernel(*refs, cfg: StepConfig, masked: bool, counts):
  p = cfg.program
  ns, nw, nsm = counts
  (valid_ref, (xp_ref,), state_refs, d_new_refs, weight_refs, small_refs, (d_xs_ref,),
   d_rp_refs, d_state_refs, d_small_refs) = _split(
       refs, (int(masked), 1, ns, ns, nw, nsm, 1, int(not p.same_grads), ns, nsm))
  xs = tuple(xp_ref[k].astype(f32) for k in range(p.num_gates))
  states = tuple(_columns(cfg, r) for r in state_refs)
  valid = valid_ref[0][...] > 0 if masked else None
  small = tuple(r[...] for r in small_refs)
  d_new = tuple(r[...] for r in d_new_refs)
  d_small, d_states, d_xs, d_rp = p.step_vjp(small, states, xs,
                                             _rprojs(cfg, state_refs, weight_refs), valid, d_new)
  for k, d in enumerate(d_xs):
    d_xs_ref[k] = d.astype(d_xs_ref.dtype)
  for out in d_rp_refs:
    for k, g in enumerate(p.rproj_gates):
      out[k] = d_rp[g].astype(out.dtype)
  for ref, d in zip(d_state_refs, d_states):
    ref[...] = d
  for ref, d in zip(d_small_refs, d_small):
    ref[...] = d.astype(f32)


def _specs(cfg, xs, states, weights, small):
  """BlockSpecs of valid, xs, full-width states, column states, weights, small, d small."""
  bb, bn = cfg.block_b, cfg.block_n
  tiled = xs.shape[-1] != bn
  valid = block_spec((bb, 1), lambda b, j: (b, 0))
  xs_spec = block_spec((xs.shape[0], bb, bn), lambda b, j: (0, b, j))
  full = [block_spec((bb, s.shape[-1]), lambda b, j: (b, 0)) for s in states]
  cols = [block_spec((bb, bn), lambda b, j: (b, j)) for _ in states] if tiled else full
  w_specs = [block_spec((w.shape[0], bn), lambda b, j: (0, j)) for w in weights]
  if tiled:  # separable programs: every small param is [1, N]
    s_specs = [block_spec((1, bn), lambda b, j: (0, j)) for _ in small]
    d_small = [block_spec((None, 1, bn), lambda b, j: (b, 0, j)) for _ in small]
  else:
    s_specs = [block_spec(s.shape, lambda b, j: (0, 0)) for s in small]
    d_small = [block_spec((None, *s.shape), lambda b, j: (b, 0, 0)) for s in small]
  return valid, xs_spec, full, cols, w_specs, s_specs, d_small


def _step_forward(cfg, xs, states, weights, small, valid):
  _, b, n = xs.shape
  valid_spec, xs_spec, full, cols, w_specs, s_specs, _ = _specs(cfg, xs, states, weights, small)
  operands = [xs, *states, *weights, *small]
  in_specs = [xs_spec, *full, *w_specs, *s_specs]
  if valid is not None:
    operands, in_specs = [valid, *operands], [valid_spec, *in_specs]
  kernel = functools.partial(_forward_kernel, cfg=cfg, masked=valid is not None,
                             counts=(len(states), len(weights), len(small)))
  return tuple(pl.pallas_call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct(s.shape, f32) for s in states],
      grid=(b // cfg.block_b, n // cfg.block_n),
      in_specs=in_specs,
      out_specs=cols,
      compiler_params=cfg.target.compiler_params(("parallel", "parallel")),
      interpret=cfg.target.interpret,
      name=f"{type(cfg.program.cell).__name__}_step_fwd",
  )(*operands))


def _step_backward(cfg, xs, states, d_new, weights, small, valid):
  """-> (d_xs [G, B, N], d_rprojs per gate (None where no term), direct d states, d small)."""
  p = cfg.program
  g, b, n = xs.shape
  nb = b // cfg.block_b
  valid_spec, xs_spec, full, cols, w_specs, s_specs, d_small_specs = _specs(
      cfg, xs, states, weights, small)
  operands = [xs, *states, *d_new, *weights, *small]
  in_specs = [xs_spec, *full, *cols, *w_specs, *s_specs]
  if valid is not None:
    operands, in_specs = [valid, *operands], [valid_spec, *in_specs]
  gr = len(p.rproj_gates)
  rp_shapes = [] if p.same_grads else [jax.ShapeDtypeStruct((gr, b, n), xs.dtype)]
  rp_specs = [] if p.same_grads else [
      block_spec((gr, cfg.block_b, cfg.block_n), lambda i, j: (0, i, j))]
  kernel = functools.partial(_backward_kernel, cfg=cfg, masked=valid is not None,
                             counts=(len(states), len(weights), len(small)))
  outs = pl.pallas_call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct(xs.shape, xs.dtype), *rp_shapes,
                 *[jax.ShapeDtypeStruct(s.shape, f32) for s in states],
                 *[jax.ShapeDtypeStruct((nb, *s.shape), f32) for s in small]],
      grid=(nb, n // cfg.block_n),
      in_specs=in_specs,
      out_specs=[xs_spec, *rp_specs, *cols, *d_small_specs],
      compiler_params=cfg.target.compiler_params(("parallel", "parallel")),
      interpret=cfg.target.interpret,
      name=f"{type(p.cell).__name__}_step_bwd",
  )(*operands)
  d_xs, d_rp, outs = outs[0], outs[1:1 + len(rp_shapes)], outs[1 + len(rp_shapes):]
  d_states, d_small = outs[:len(states)], outs[len(states):]
  if p.same_grads:  # d rprojs is d xs at the projected gates
    stacked, index = d_xs, {gate: gate for gate in p.rproj_gates}
  else:
    stacked, index = d_rp[0], {gate: k for k, gate in enumerate(p.rproj_gates)}
  d_rprojs = tuple(stacked[index[k]] if k in index else None for k in range(g))
  return d_xs, d_rprojs, tuple(d_states), tuple(d.sum(0) for d in d_small)


# -- one step, differentiable -----------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def fused_step(cfg: StepConfig, xs, states, weights, small, valid):
  """One step on the kernel: xs [G, B, N], states ([B, w] f32, ...), valid [B, 1] int32 (0
  freezes a row) or None -> new states. Its VJP gives every weight's gradient for this step."""
  return _step_forward(cfg, xs, states, weights, small, valid)


def _fused_step_fwd(cfg, xs, states, weights, small, valid):
  return fused_step(cfg, xs, states, weights, small, valid), (xs, states, weights, small, valid)


def _fused_step_bwd(cfg, residuals, d_new):
  xs, states, weights, small, valid = residuals
  p = cfg.program
  d_xs, d_rprojs, d_states, d_small = _step_backward(cfg, xs, states, d_new, weights, small,
                                                     valid)
  d_states = p.add_transposed(d_states, d_rprojs, weights)
  d_weights = tuple(jnp.dot(states[src].T.astype(f32), d_rprojs[gate].astype(f32)).astype(w.dtype)
                    for (src, gate), w in zip(p.terms, weights))
  return (d_xs, d_states, d_weights, tuple(d.astype(s.dtype) for d, s in zip(d_small, small)),
          None)


fused_step.defvjp(_fused_step_fwd, _fused_step_bwd)


def step_reference(program: Program, xs, states, weights, small, valid):
  """The same function as `fused_step` in plain jnp."""
  xs = tuple(xs[k].astype(f32) for k in range(program.num_gates))
  return program.step(small, states, xs, program.rprojs(states, weights),
                      None if valid is None else valid > 0)


# -- a whole sequence of steps, with the weight gradients hoisted out of the loop ----------------

def _valid_at(lengths, t):
  return None if lengths is None else (t < lengths).astype(jnp.int32)


def _scan_forward(cfg, xp, states0, weights, small, lengths):
  def body(states, inputs):
    xp_t, t = inputs
    new = _step_forward(cfg, xp_t, states, weights, small, _valid_at(lengths, t))
    return new, new

  finals, seqs = jax.lax.scan(body, tuple(states0), (xp, jnp.arange(xp.shape[0])))
  return seqs, finals


def _scan_backward(cfg, xp, prev, d_seqs, d_finals, weights, small, lengths):
  p = cfg.program

  def body(carry, inputs):
    d_states, d_small = carry
    xp_t, prev_t, d_seq_t, t = inputs
    d_new = tuple(a + b for a, b in zip(d_states, d_seq_t))
    d_xs, d_rprojs, d_st, d_sm = _step_backward(cfg, xp_t, prev_t, d_new, weights, small,
                                                _valid_at(lengths, t))
    d_st = p.add_transposed(d_st, d_rprojs, weights)
    d_rp = None if p.same_grads else jnp.stack([d_rprojs[g] for g in p.rproj_gates])
    return (d_st, tuple(a + b for a, b in zip(d_small, d_sm))), (d_xs, d_rp)

  zeros = tuple(jnp.zeros(s.shape, f32) for s in small)
  (d_states0, d_small), (d_xp, d_rp) = jax.lax.scan(
      body, (tuple(d_finals), zeros), (xp, prev, d_seqs, jnp.arange(xp.shape[0])), reverse=True)
  return d_xp, d_rp, d_states0, d_small


stepped_sequence = autodiff.sequence_op(_scan_forward, _scan_backward)
stepped_sequence.__doc__ = """The step kernel in a scan, as one differentiable sequence op with
the same arguments and results as `sequence.fused_sequence`."""
