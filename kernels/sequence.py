"""Whole-sequence kernel: the time loop inside the kernel, the recurrent weights on chip for all
of it, the state in registers/VMEM; a backward kernel that runs time in reverse.

Grid (batch blocks, time chunks). A batch block owns its rows for the whole sequence. On TPU
the chunks run in order along an "arbitrary" axis and the state carries over in the `finals`
output block, which every chunk of a batch block revisits; on GPU there is one chunk.

    forward   xp [T, G, B, N], states0 ([B, w], ...)     -> seqs ([T, B, w], ...), finals
    backward  prev states, d seqs, d finals (reversed)   -> d xp, d rprojs, d states0, d small

Axis letters as in `programs`; tc the time chunk, bb the batch block.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels import autodiff
from kernels.platforms import Target, block_spec
from kernels.programs import Program

f32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
  """Static arguments of the whole-sequence kernels."""
  program: Program
  target: Target
  block_b: int
  block_t: int
  masked: bool  # lengths are passed (else every step is valid)


@dataclasses.dataclass(frozen=True)
class _KernelConfig(SequenceConfig):
  """SequenceConfig plus what the kernel bodies need: operand counts (states, weights,
  small) and the number of time chunks."""
  counts: tuple
  num_chunks: int

  @property
  def single_chunk(self) -> bool:
    return self.num_chunks == 1


def _take(refs, n):
  return tuple(refs[:n]), refs[n:]


def _split_refs(cfg, refs, groups):
  """Splits the flat kernel refs into the named groups of the given sizes."""
  refs = list(refs)
  lengths, refs = _take(refs, int(cfg.masked))
  out = [lengths[0] if lengths else None]
  for size in groups:
    group, refs = _take(refs, size)
    out.append(group)
  assert not refs
  return out


def _valid(lengths_ref, t):
  return None if lengths_ref is None else t < lengths_ref[...]


def _weights(cfg, weight_refs):
  """The weights as values loaded once before the loop, or as the refs themselves, read at
  each matmul (on TPU: loading all of R into values at each step spilled 8.7 MiB at H=1024)."""
  if cfg.target.hoist_weights:
    return tuple(r[...] for r in weight_refs)
  return weight_refs


def _forward_kernel(*refs, cfg: SequenceConfig):
  p = cfg.program
  ns, nw, nsm = cfg.counts
  lengths_ref, (xp_ref,), states0, weight_refs, small_refs, seqs, finals = _split_refs(
      cfg, refs, (1, ns, nw, nsm, ns, ns))
  chunk = pl.program_id(1)
  if cfg.single_chunk:
    states = tuple(s[...].astype(f32) for s in states0)
  else:
    @pl.when(chunk == 0)
    def _init():
      for f, s in zip(finals, states0):
        f[...] = s[...].astype(f32)
    states = tuple(f[...] for f in finals)
  weights = _weights(cfg, weight_refs)
  small = tuple(r[...] for r in small_refs)

  def step(i, states):
    xs = tuple(xp_ref[i, k].astype(f32) for k in range(p.num_gates))
    valid = _valid(lengths_ref, chunk * cfg.block_t + i)
    new = p.step(small, states, xs, p.rprojs(states, weights), valid)
    for ref, s in zip(seqs, new):
      ref[i] = s
    return new

  states = jax.lax.fori_loop(jnp.int32(0), jnp.int32(cfg.block_t), step, states)
  for f, s in zip(finals, states):
    f[...] = s


def _backward_kernel(*refs, cfg: SequenceConfig):
  p = cfg.program
  ns, nw, nsm = cfg.counts
  n_out_rp = 0 if p.same_grads else 1
  (lengths_ref, (xp_ref,), prev_refs, d_seq_refs, d_final_refs, weight_refs, small_refs,
   (d_xp_ref,), d_rp_refs, d_state_refs, d_small_refs) = _split_refs(
       cfg, refs, (1, ns, ns, ns, nw, nsm, 1, n_out_rp, ns, nsm))
  chunk = pl.program_id(1)
  first_t = (pl.num_programs(1) - 1 - chunk) * cfg.block_t  # chunks run backwards in time
  if cfg.single_chunk:
    d_states = tuple(r[...].astype(f32) for r in d_final_refs)
    d_small = tuple(jnp.zeros(r.shape, f32) for r in d_small_refs)
  else:
    @pl.when(chunk == 0)
    def _init():
      for out, d in zip(d_state_refs, d_final_refs):
        out[...] = d[...].astype(f32)
      for out in d_small_refs:
        out[...] = jnp.zeros(out.shape, f32)
    d_states = tuple(r[...] for r in d_state_refs)
    d_small = tuple(r[...] for r in d_small_refs)
  weights = _weights(cfg, weight_refs)
  small = tuple(r[...] for r in small_refs)

  def step(i, carry):
    d_states, d_small = carry
    j = cfg.block_t - 1 - i
    states = tuple(r[j] for r in prev_refs)
    xs = tuple(xp_ref[j, k].astype(f32) for k in range(p.num_gates))
    d_new = tuple(d + r[j].astype(f32) for d, r in zip(d_states, d_seq_refs))
    d_sm, d_st, d_xs, d_rp = p.step_vjp(small, states, xs, p.rprojs(states, weights),
                                        _valid(lengths_ref, first_t + j), d_new)
    for k, d in enumerate(d_xs):
      d_xp_ref[j, k] = d.astype(d_xp_ref.dtype)
    for out in d_rp_refs:
      for k, g in enumerate(p.rproj_gates):
        out[j, k] = d_rp[g].astype(out.dtype)
    return (p.add_transposed(d_st, d_rp, weights),
            tuple(a + b.astype(f32) for a, b in zip(d_small, d_sm)))

  d_states, d_small = jax.lax.fori_loop(jnp.int32(0), jnp.int32(cfg.block_t), step,
                                        (d_states, d_small))
  for out, d in zip(d_state_refs, d_states):
    out[...] = d
  for out, d in zip(d_small_refs, d_small):
    out[...] = d


# -- wrappers ---------------------------------------------------------------------------------

def _kernel_config(cfg, num_steps, states0, weights, small):
  return _KernelConfig(cfg.program, cfg.target, cfg.block_b, cfg.block_t, cfg.masked,
                       counts=(len(states0), len(weights), len(small)),
                       num_chunks=num_steps // cfg.block_t)


def _specs(cfg, xp, states, weights, small, reverse):
  """BlockSpecs of lengths, xp, per-step sequences, per-batch states, weights, small."""
  t_index = (lambda t: cfg.num_chunks - 1 - t) if reverse else (lambda t: t)
  tc, bb = cfg.block_t, cfg.block_b
  _, g, _, n = xp.shape
  lengths = block_spec((bb, 1), lambda b, t: (b, 0))
  xp_spec = block_spec((tc, g, bb, n), lambda b, t: (t_index(t), 0, b, 0))
  seq = [block_spec((tc, bb, s.shape[-1]), lambda b, t: (t_index(t), b, 0)) for s in states]
  state = [block_spec((bb, s.shape[-1]), lambda b, t: (b, 0)) for s in states]
  whole = lambda a: cfg.target.weight_spec(a.shape, lambda b, t: (0, 0))
  return lengths, xp_spec, seq, state, [whole(w) for w in weights], [whole(s) for s in small]


def _vmem_bytes(cfg, xp, states, weights, small):
  """A rough VMEM estimate: weights once, every pipelined block twice."""
  size = lambda a: a.size * a.dtype.itemsize
  per_chunk = cfg.block_t * cfg.block_b * (xp.shape[1] * xp.shape[3] * xp.dtype.itemsize * 2
                                           + sum(s.shape[-1] for s in states) * 4 * 2)
  return sum(map(size, weights)) + sum(map(size, small)) + 2 * per_chunk


def _forward(cfg, xp, states0, weights, small, lengths):
  kcfg = _kernel_config(cfg, xp.shape[0], states0, weights, small)
  t, _, b, _ = xp.shape
  len_spec, xp_spec, seq_specs, state_specs, w_specs, s_specs = _specs(
      kcfg, xp, states0, weights, small, reverse=False)
  operands = [xp, *states0, *weights, *small]
  in_specs = [xp_spec, *state_specs, *w_specs, *s_specs]
  if cfg.masked:
    operands, in_specs = [lengths, *operands], [len_spec, *in_specs]
  outs = pl.pallas_call(
      functools.partial(_forward_kernel, cfg=kcfg),
      out_shape=[*[jax.ShapeDtypeStruct((t, b, s.shape[-1]), f32) for s in states0],
                 *[jax.ShapeDtypeStruct(s.shape, f32) for s in states0]],
      grid=(b // cfg.block_b, kcfg.num_chunks),
      in_specs=in_specs,
      out_specs=[*seq_specs, *state_specs],
      compiler_params=cfg.target.compiler_params(
          ("parallel", "arbitrary"), _vmem_bytes(kcfg, xp, states0, weights, small)),
      interpret=cfg.target.interpret,
      name=f"{type(cfg.program.cell).__name__}_sequence_fwd",
  )(*operands)
  ns = len(states0)
  return tuple(outs[:ns]), tuple(outs[ns:])


def _backward(cfg, xp, prev, d_seqs, d_finals, weights, small, lengths):
  kcfg = _kernel_config(cfg, xp.shape[0], prev, weights, small)
  p = cfg.program
  t, g, b, n = xp.shape
  nb = b // cfg.block_b
  len_spec, xp_spec, seq_specs, state_specs, w_specs, s_specs = _specs(
      kcfg, xp, prev, weights, small, reverse=True)
  operands = [xp, *prev, *d_seqs, *d_finals, *weights, *small]
  in_specs = [xp_spec, *seq_specs, *seq_specs, *state_specs, *w_specs, *s_specs]
  if cfg.masked:
    operands, in_specs = [lengths, *operands], [len_spec, *in_specs]
  rp_shapes, rp_specs = [], []
  if not p.same_grads:
    gr = len(p.rproj_gates)
    rp_shapes = [jax.ShapeDtypeStruct((t, gr, b, n), xp.dtype)]
    rp_specs = [block_spec((cfg.block_t, gr, cfg.block_b, n),
                             lambda i, j: (kcfg.num_chunks - 1 - j, 0, i, 0))]
  # d small: one partial sum per batch block, summed below.
  small_specs = [block_spec((None, *s.shape), lambda i, j: (i, 0, 0)) for s in small]
  outs = pl.pallas_call(
      functools.partial(_backward_kernel, cfg=kcfg),
      out_shape=[jax.ShapeDtypeStruct(xp.shape, xp.dtype), *rp_shapes,
                 *[jax.ShapeDtypeStruct(s.shape, f32) for s in d_finals],
                 *[jax.ShapeDtypeStruct((nb, *s.shape), f32) for s in small]],
      grid=(nb, kcfg.num_chunks),
      in_specs=in_specs,
      out_specs=[xp_spec, *rp_specs, *state_specs, *small_specs],
      compiler_params=cfg.target.compiler_params(
          ("parallel", "arbitrary"), 2 * _vmem_bytes(kcfg, xp, prev, weights, small)),
      interpret=cfg.target.interpret,
      name=f"{type(p.cell).__name__}_sequence_bwd",
  )(*operands)
  d_xp, outs = outs[0], outs[1:]
  d_rprojs, outs = outs[:len(rp_shapes)], outs[len(rp_shapes):]
  d_states0, d_small = outs[:len(prev)], outs[len(prev):]
  return (d_xp, d_rprojs[0] if d_rprojs else None, tuple(d_states0),
          tuple(d.sum(0) for d in d_small))


fused_sequence = autodiff.sequence_op(_forward, _backward)
fused_sequence.__doc__ = """The whole-sequence kernel op, differentiable (see `autodiff`):
(cfg, xp [T, G, B, N], states0, weights, small, lengths [B, 1] | None) -> (seqs, finals)."""


def sequence_reference(program: Program, xp, states0, weights, small, lengths):
  """The same function as `fused_sequence` in plain jnp under lax.scan."""
  def step(states, inputs):
    xp_t, t = inputs
    xs = tuple(xp_t[k].astype(f32) for k in range(program.num_gates))
    valid = None if lengths is None else t < lengths
    new = program.step(small, states, xs, program.rprojs(states, weights), valid)
    return new, new

  finals, seqs = jax.lax.scan(step, tuple(states0), (xp, jnp.arange(xp.shape[0])))
  return seqs, finals
