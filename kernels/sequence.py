"""Whole-sequence kernel: the time loop inside the kernel, the recurrent weights on chip for all
of it, the state in registers/VMEM; a backward kernel that runs time in reverse.

Grid (batch blocks, heads, time chunks). A batch block owns its rows for the whole sequence; a
head (one program for dense recurrence) its columns and its diagonal blocks of R. On TPU the
chunks run in order along an "arbitrary" axis and the state carries over in the `finals`
output block, which every chunk of a batch block revisits; on GPU there is one chunk.

    forward   xp [T, G, B, N], states0 ([B, w], ...)       -> seqs ([T, B, w], ...), finals
    backward  entering states, d seqs, d finals (reversed) -> d xp, d rprojs, d states0, d small

The options (`autodiff.Extras`) stream with the time chunks (resets [T, B, 1], zoneout weights
[T, B, w]) or stay per batch block (lengths, the recurrent dropout mask, constant zoneout
weights). The backward kernel sends the cotangent of a reset step's entering state to
states0, and clips the one it passes to the previous step (grad_clip).

Axis letters as in `programs`; tc the time chunk, bb the batch block, bn a head's columns.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels import autodiff
from kernels.platforms import Target, block_spec, optional_ref, split_refs
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
  grad_clip: float | None = None


@dataclasses.dataclass(frozen=True)
class _KernelConfig(SequenceConfig):
  """SequenceConfig plus what the kernel bodies need: operand counts (states, weights,
  small), the number of time chunks and which options come with the call."""
  counts: tuple = ()
  num_chunks: int = 1
  resets: bool = False
  h_mask: bool = False
  keep_modes: tuple = ()  # per state: None, "step" ([T, B, w]) or "const" ([1, w])

  @property
  def single_chunk(self) -> bool:
    return self.num_chunks == 1

  @property
  def num_keeps(self) -> int:
    return sum(m is not None for m in self.keep_modes)


def _weights(cfg, weight_refs):
  """The weights as values loaded once before the loop, or as the refs themselves, read at
  each matmul (on TPU: loading all of R into values at each step spilled 8.7 MiB at H=1024)."""
  if cfg.target.hoist_weights:
    return tuple(r[...] for r in weight_refs)
  return weight_refs


def _keeps(cfg, keep_refs, i):
  """The zoneout weights of local step i, per state (None where the state has none)."""
  if not cfg.keep_modes:
    return None
  it, out = iter(keep_refs), []
  for mode in cfg.keep_modes:
    if mode is not None:
      ref = next(it)
      out.append((ref[i] if mode == "step" else ref[...]).astype(f32))
    else:
      out.append(None)
  return tuple(out)


def _forward_kernel(*refs, cfg: _KernelConfig):
  p = cfg.program
  ns, nw, nsm = cfg.counts
  (lengths_ref, resets_ref, (xp_ref,), states0, h_mask_ref, keep_refs, weight_refs, small_refs,
   seqs, finals) = split_refs(refs, (cfg.masked, cfg.resets, 1, ns, cfg.h_mask, cfg.num_keeps,
                                      nw, nsm, ns, ns))
  lengths_ref, resets_ref, h_mask_ref = map(optional_ref, (lengths_ref, resets_ref, h_mask_ref))
  chunk = pl.program_id(2)
  initial = tuple(s[...].astype(f32) for s in states0)
  if cfg.single_chunk:
    states = initial
  else:
    @pl.when(chunk == 0)
    def _init():
      for f, s in zip(finals, initial):
        f[...] = s
    states = tuple(f[...] for f in finals)
  weights = _weights(cfg, weight_refs)
  small = tuple(r[...] for r in small_refs)
  mask = None if h_mask_ref is None else h_mask_ref[...]

  def step(i, states):
    states = p.enter(states, initial, None if resets_ref is None else resets_ref[i] > 0)
    xs = tuple(xp_ref[i, k].astype(f32) for k in range(p.num_gates))
    valid = None if lengths_ref is None else chunk * cfg.block_t + i < lengths_ref[...]
    new = p.step(small, states, xs, p.rprojs(p.rinputs(states, mask), weights), valid,
                 _keeps(cfg, keep_refs, i))
    for ref, s in zip(seqs, new):
      ref[i] = s
    return new

  states = jax.lax.fori_loop(jnp.int32(0), jnp.int32(cfg.block_t), step, states)
  for f, s in zip(finals, states):
    f[...] = s


def _backward_kernel(*refs, cfg: _KernelConfig):
  p = cfg.program
  ns, nw, nsm = cfg.counts
  (lengths_ref, resets_ref, (xp_ref,), entering_refs, d_seq_refs, d_final_refs, h_mask_ref,
   keep_refs, weight_refs, small_refs, (d_xp_ref,), d_rp_refs, d_state_refs, d_reset_refs,
   d_small_refs) = split_refs(refs, (cfg.masked, cfg.resets, 1, ns, ns, ns, cfg.h_mask,
                                      cfg.num_keeps, nw, nsm, 1, not p.same_grads, ns,
                                      ns * cfg.resets, nsm))
  lengths_ref, resets_ref, h_mask_ref = map(optional_ref, (lengths_ref, resets_ref, h_mask_ref))
  chunk = pl.program_id(2)
  first_t = (pl.num_programs(2) - 1 - chunk) * cfg.block_t  # chunks run backwards in time
  zeros = lambda refs: tuple(jnp.zeros(r.shape, f32) for r in refs)
  if cfg.single_chunk:
    d_states = tuple(r[...].astype(f32) for r in d_final_refs)
    d_resets, d_small = zeros(d_reset_refs), zeros(d_small_refs)
  else:
    @pl.when(chunk == 0)
    def _init():
      for out, d in zip(d_state_refs, d_final_refs):
        out[...] = d[...].astype(f32)
      for out in (*d_reset_refs, *d_small_refs):
        out[...] = jnp.zeros(out.shape, f32)
    d_states, d_resets, d_small = (tuple(r[...] for r in refs)
                                   for refs in (d_state_refs, d_reset_refs, d_small_refs))
  weights = _weights(cfg, weight_refs)
  small = tuple(r[...] for r in small_refs)
  mask = None if h_mask_ref is None else h_mask_ref[...]

  def step(i, carry):
    d_states, d_resets, d_small = carry
    j = cfg.block_t - 1 - i
    states = tuple(r[j] for r in entering_refs)
    xs = tuple(xp_ref[j, k].astype(f32) for k in range(p.num_gates))
    d_new = tuple(d + r[j].astype(f32) for d, r in zip(d_states, d_seq_refs))
    valid = None if lengths_ref is None else first_t + j < lengths_ref[...]
    d_sm, d_st, d_xs, d_rp = p.step_vjp(small, states, xs,
                                        p.rprojs(p.rinputs(states, mask), weights), valid,
                                        d_new, _keeps(cfg, keep_refs, j))
    for k, d in enumerate(d_xs):
      d_xp_ref[j, k] = d.astype(d_xp_ref.dtype)
    for out in d_rp_refs:
      for k, g in enumerate(p.rproj_gates):
        out[j, k] = d_rp[g].astype(out.dtype)
    d_prev, d_resets = autodiff.split_reset(
        p.add_transposed(d_st, d_rp, weights, mask), d_resets,
        None if resets_ref is None else resets_ref[j] > 0, cfg.grad_clip)
    return d_prev, d_resets, tuple(a + b.astype(f32) for a, b in zip(d_small, d_sm))

  d_states, d_resets, d_small = jax.lax.fori_loop(
      jnp.int32(0), jnp.int32(cfg.block_t), step, (d_states, d_resets, d_small))
  for out, d in zip((*d_state_refs, *d_reset_refs, *d_small_refs),
                    (*d_states, *d_resets, *d_small)):
    out[...] = d


# -- wrappers ---------------------------------------------------------------------------------

def _kernel_config(cfg, num_steps, states0, weights, small, extras):
  modes = ()
  if extras.keeps is not None:
    modes = tuple(None if k is None else ("step" if k.ndim == 3 else "const")
                  for k in extras.keeps)
  return _KernelConfig(cfg.program, cfg.target, cfg.block_b, cfg.block_t,
                       extras.lengths is not None, cfg.grad_clip,
                       counts=(len(states0), len(weights), len(small)),
                       num_chunks=num_steps // cfg.block_t, resets=extras.resets is not None,
                       h_mask=extras.h_mask is not None, keep_modes=modes)


@dataclasses.dataclass(frozen=True)
class _Specs:
  """BlockSpecs over the grid (batch block b, head h, time chunk t) for every operand kind."""
  cfg: _KernelConfig
  reverse: bool

  def _t(self, t):
    return self.cfg.num_chunks - 1 - t if self.reverse else t

  def _cols(self, width):
    return width // self.cfg.program.heads

  def lengths(self):
    return block_spec((self.cfg.block_b, 1), lambda b, h, t: (b, 0))

  def resets(self):
    return block_spec((self.cfg.block_t, self.cfg.block_b, 1),
                      lambda b, h, t: (self._t(t), b, 0))

  def xp(self, xp):
    _, g, _, n = xp.shape
    return block_spec((self.cfg.block_t, g, self.cfg.block_b, self._cols(n)),
                      lambda b, h, t: (self._t(t), 0, b, h))

  def seq(self, width):
    return block_spec((self.cfg.block_t, self.cfg.block_b, self._cols(width)),
                      lambda b, h, t: (self._t(t), b, h))

  def state(self, width):
    return block_spec((self.cfg.block_b, self._cols(width)), lambda b, h, t: (b, h))

  def keep(self, keep):
    if keep.ndim == 3:
      return self.seq(keep.shape[-1])
    return block_spec((1, self._cols(keep.shape[-1])), lambda b, h, t: (0, h))

  def weight(self, w):
    if w.ndim == 3:  # head blocks [heads, d, d]
      return self.cfg.target.weight_spec((None, *w.shape[1:]), lambda b, h, t: (h, 0, 0))
    return self.cfg.target.weight_spec(w.shape, lambda b, h, t: (0, 0))

  def small(self, s):
    if self.cfg.program.heads > 1:  # [1, N], split by head
      return self.cfg.target.weight_spec((1, self._cols(s.shape[-1])), lambda b, h, t: (0, h))
    return self.cfg.target.weight_spec(s.shape, lambda b, h, t: (0, 0))

  def d_small(self, s):
    """One partial sum per batch block: [nb, *s.shape]."""
    heads = self.cfg.program.heads
    return block_spec((None, s.shape[0], s.shape[1] // heads), lambda b, h, t: (b, 0, h))


def _option_operands(specs, extras):
  """(operand, spec) pairs of the options before xp (lengths, resets) and of those after the
  states (the dropout mask, the zoneout weights)."""
  front, back = [], []
  if extras.lengths is not None:
    front.append((extras.lengths, specs.lengths()))
  if extras.resets is not None:
    front.append((extras.resets, specs.resets()))
  if extras.h_mask is not None:
    back.append((extras.h_mask, specs.state(extras.h_mask.shape[-1])))
  back += [(k, specs.keep(k)) for k in extras.keeps or () if k is not None]
  return front, back


def _vmem_bytes(cfg, xp, states, weights, small, extras):
  """A rough VMEM estimate: weights once, every pipelined block twice."""
  size = lambda a: a.size * a.dtype.itemsize
  heads = cfg.program.heads
  per_step = (2 * xp.shape[1] * xp.shape[3] * xp.dtype.itemsize
              + 2 * sum(s.shape[-1] for s in states) * 4
              + sum(k.shape[-1] * 4 for k in extras.keeps or () if k is not None and k.ndim == 3))
  resets = 512 if extras.resets is not None else 0  # [bb, 1] int32 pads to 128 lanes on TPU
  per_chunk = cfg.block_t * cfg.block_b * (per_step // heads + resets)
  return (sum(map(size, weights)) + sum(map(size, small))) // heads + 2 * per_chunk


def _forward(cfg, xp, states0, weights, small, extras):
  kcfg = _kernel_config(cfg, xp.shape[0], states0, weights, small, extras)
  t, _, b, _ = xp.shape
  specs = _Specs(kcfg, reverse=False)
  front, back = _option_operands(specs, extras)
  inputs = [*front, (xp, specs.xp(xp)), *[(s, specs.state(s.shape[-1])) for s in states0],
            *back, *[(w, specs.weight(w)) for w in weights], *[(s, specs.small(s)) for s in small]]
  outs = pl.pallas_call(
      functools.partial(_forward_kernel, cfg=kcfg),
      out_shape=[*[jax.ShapeDtypeStruct((t, b, s.shape[-1]), f32) for s in states0],
                 *[jax.ShapeDtypeStruct(s.shape, f32) for s in states0]],
      grid=(b // cfg.block_b, kcfg.program.heads, kcfg.num_chunks),
      in_specs=[spec for _, spec in inputs],
      out_specs=[*[specs.seq(s.shape[-1]) for s in states0],
                 *[specs.state(s.shape[-1]) for s in states0]],
      compiler_params=cfg.target.compiler_params(
          ("parallel", "parallel", "arbitrary"),
          _vmem_bytes(kcfg, xp, states0, weights, small, extras)),
      interpret=cfg.target.interpret,
      name=f"{type(cfg.program.cell).__name__}_sequence_fwd",
  )(*[a for a, _ in inputs])
  ns = len(states0)
  return tuple(outs[:ns]), tuple(outs[ns:])


def _backward(cfg, xp, entering, d_seqs, d_finals, weights, small, extras):
  kcfg = _kernel_config(cfg, xp.shape[0], entering, weights, small, extras)
  p = cfg.program
  t, g, b, n = xp.shape
  nb = b // cfg.block_b
  specs = _Specs(kcfg, reverse=True)
  front, back = _option_operands(specs, extras)
  seq_specs = [specs.seq(s.shape[-1]) for s in entering]
  state_specs = [specs.state(s.shape[-1]) for s in d_finals]
  inputs = [*front, (xp, specs.xp(xp)), *zip(entering, seq_specs), *zip(d_seqs, seq_specs),
            *zip(d_finals, state_specs), *back, *[(w, specs.weight(w)) for w in weights],
            *[(s, specs.small(s)) for s in small]]
  rp_shapes, rp_specs = [], []
  if not p.same_grads:
    gr = len(p.rproj_gates)
    rp_shapes = [jax.ShapeDtypeStruct((t, gr, b, n), xp.dtype)]
    rp_specs = [block_spec((cfg.block_t, gr, cfg.block_b, n // p.heads),
                           lambda i, h, j: (kcfg.num_chunks - 1 - j, 0, i, h))]
  num_resets = len(d_finals) if kcfg.resets else 0
  state_shapes = [jax.ShapeDtypeStruct(s.shape, f32) for s in d_finals]
  outs = pl.pallas_call(
      functools.partial(_backward_kernel, cfg=kcfg),
      out_shape=[jax.ShapeDtypeStruct(xp.shape, xp.dtype), *rp_shapes, *state_shapes,
                 *state_shapes[:num_resets],
                 *[jax.ShapeDtypeStruct((nb, *s.shape), f32) for s in small]],
      grid=(nb, p.heads, kcfg.num_chunks),
      in_specs=[spec for _, spec in inputs],
      out_specs=[specs.xp(xp), *rp_specs, *state_specs, *state_specs[:num_resets],
                 *[specs.d_small(s) for s in small]],
      compiler_params=cfg.target.compiler_params(
          ("parallel", "parallel", "arbitrary"),
          2 * _vmem_bytes(kcfg, xp, entering, weights, small, extras)),
      interpret=cfg.target.interpret,
      name=f"{type(p.cell).__name__}_sequence_bwd",
  )(*[a for a, _ in inputs])
  d_xp, outs = outs[0], outs[1:]
  d_rprojs, outs = outs[:len(rp_shapes)], outs[len(rp_shapes):]
  ns = len(d_finals)
  d_states0, d_resets, d_small = outs[:ns], outs[ns:ns + num_resets], outs[ns + num_resets:]
  if num_resets:
    d_states0 = [a + r for a, r in zip(d_states0, d_resets)]
  return (d_xp, d_rprojs[0] if d_rprojs else None, tuple(d_states0),
          tuple(d.sum(0) for d in d_small))


_sequence_op = autodiff.sequence_op(_forward, _backward)


def fused_sequence(cfg: SequenceConfig, xp, states0, weights, small, lengths, resets=None,
                   h_mask=None, keeps=None):
  """The whole-sequence kernel op, differentiable (see `autodiff`; the options as in
  `autodiff.Extras`, in the kernel layout): (cfg, xp [T, G, B, N], states0, weights, small,
  lengths [B, 1] | None) -> (seqs, finals)."""
  return _sequence_op(cfg, xp, tuple(states0), tuple(weights), tuple(small),
                      autodiff.Extras(lengths, resets, h_mask, keeps))


def sequence_reference(program: Program, xp, states0, weights, small, lengths, resets=None,
                       h_mask=None, keeps=None, grad_clip=None):
  """The same function as `fused_sequence` in plain jnp under lax.scan (differentiated by
  JAX, with grad_clip clipping the cotangent each step passes to the previous one)."""
  keeps = tuple(keeps) if keeps is not None else None

  def step(states, inputs):
    xp_t, t = inputs
    states = _clip_cotangent(states, grad_clip)
    states = program.enter(states, states0, None if resets is None else resets[t] > 0)
    xs = tuple(xp_t[k].astype(f32) for k in range(program.num_gates))
    valid = None if lengths is None else t < lengths
    keeps_t = None if keeps is None else tuple(
        None if k is None else (k[t] if k.ndim == 3 else k) for k in keeps)
    new = program.step(small, states, xs, program.rprojs(program.rinputs(states, h_mask),
                                                         weights), valid, keeps_t)
    return new, new

  finals, seqs = jax.lax.scan(step, tuple(states0), (xp, jnp.arange(xp.shape[0])))
  return seqs, finals


def _clip_cotangent(tree, grad_clip):
  """The identity, whose cotangent is clipped to ±grad_clip."""
  if grad_clip is None:
    return tree

  @jax.custom_vjp
  def identity(tree):
    return tree

  identity.defvjp(lambda tree: (tree, None),
                  lambda _, d: (jax.tree.map(lambda a: jnp.clip(a, -grad_clip, grad_clip), d),))
  return identity(tree)
