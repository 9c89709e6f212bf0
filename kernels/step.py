"""Fused step kernel: one time step (every recurrent matmul + the gate math + the state update)
in one kernel, called inside `lax.scan`; the fallback when the recurrent weights do not fit on
chip for the whole-sequence kernel.

Grid (batch blocks, hidden blocks). A program computes all gates of its hidden columns, so the
gate pre-activations never leave the chip; it reads the full recurrent inputs [bb, w_src] and
a column block [w_src, bn] of each weight (on GPU in chunks of the contraction, to bound
shared memory). Cells whose gate math mixes columns (LSTMP's projection, the Cho GRU's
(r ⊙ h) R_n, layer norm) run with one hidden block. With head-wise recurrence a hidden block
is a head: it reads only its head's columns of the state and its head's [d, d] blocks.

The step's options are fused in: the reset rows' entering state is read from states0, h is
multiplied by the recurrent dropout mask as it enters the matmuls, zoneout and lengths mix
the entering state into the new one.

The backward kernel recomputes the step and writes d xs, d rprojs and the direct d states;
the transposed recurrent matmuls d rprojs @ Rᵀ, the reset split and the gradient clipping
then run as ordinary XLA ops.

    fused_step(cfg, xs [G, B, N], states, weights, small, valid [B, 1] int | None, ...)
      -> states
    stepped_sequence(cfg, xp [T, G, B, N], states0, ...) -> (seqs, finals), as `sequence`
"""
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels import autodiff
from kernels.platforms import Target, block_spec, optional_ref, split_refs
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
  grad_clip: float | None = None


class StepExtras(NamedTuple):
  """One step's options in the kernel layout (see `autodiff.Extras`): valid int32 [B, 1]
  (0 freezes a row), reset int32 [B, 1], states0 (with reset), h_mask [B, Ny], keeps per
  state None or [B, w] / [1, w]."""
  valid: jax.Array | None = None
  reset: jax.Array | None = None
  states0: tuple | None = None
  h_mask: jax.Array | None = None
  keeps: tuple | None = None


def hidden_block(program: Program, target: Target, packed: Packed, block_n: int | None) -> int:
  """The column block: a head with head-wise recurrence, the whole hidden size unless the
  program is column-separable."""
  n = packed.xp.shape[-1]
  if program.heads > 1:
    head = n // program.heads
    if block_n not in (None, head):
      raise ValueError(f"block_n must be the padded head width {head} for {program.cell} "
                       f"(one program per head), got {block_n}")
    return head
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


def _reader(cfg, prev_refs, s0_refs, reset, mask_ref):
  """read(src, cols, masked): columns `cols` (None: all of the block) of the state entering
  the step, ⊙ the dropout mask for h when `masked`."""
  def read(src, cols, masked):
    load = lambda ref: ref[...] if cols is None else ref[:, cols]
    value = load(prev_refs[src])
    if reset is not None:
      value = jnp.where(reset, load(s0_refs[src]), value)
    if masked and mask_ref is not None and src == cfg.program.output_state:
      value = value * load(mask_ref)
    return value
  return read


def _columns(cfg, read, src, width):
  """This program's hidden columns of state src (of width `width` in its ref)."""
  if not cfg.program.separable or width == cfg.block_n:
    return read(src, None, False)
  start = pl.multiple_of(pl.program_id(1) * cfg.block_n, cfg.block_n)
  return read(src, pl.ds(start, cfg.block_n), False)


def _rprojs(cfg, read, weight_refs):
  """Per gate Σ rinputs[src] @ w[:, columns], the contraction chunked on GPU."""
  p = cfg.program
  out = [None] * p.num_gates
  for (src, gate), w_ref in zip(p.terms, weight_refs):
    k, bk = w_ref.shape[0], cfg.target.k_block(w_ref.shape[0])
    dot = lambda s, w: jnp.dot(s.astype(w.dtype), w, preferred_element_type=f32)
    if bk == k:
      term = dot(read(src, None, True), w_ref[...])
    else:
      def chunk(c, acc, src=src, w_ref=w_ref, bk=bk):
        k0 = pl.multiple_of(c * bk, bk)
        return acc + dot(read(src, pl.ds(k0, bk), True), w_ref[pl.ds(k0, bk), :])
      term = jax.lax.fori_loop(jnp.int32(0), jnp.int32(k // bk), chunk,
                               jnp.zeros((cfg.block_b, w_ref.shape[-1]), f32))
    out[gate] = term if out[gate] is None else out[gate] + term
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class _Flags:
  """Which options a step kernel gets: lengths, reset, mask and the zoneout modes."""
  masked: bool
  reset: bool
  h_mask: bool
  keep_modes: tuple  # per state None, "step" or "const"

  @classmethod
  def of(cls, extras: StepExtras):
    modes = () if extras.keeps is None else tuple(
        None if k is None else ("const" if k.shape[0] == 1 else "step") for k in extras.keeps)
    return cls(extras.valid is not None, extras.reset is not None, extras.h_mask is not None,
               modes)

  @property
  def num_keeps(self):
    return sum(m is not None for m in self.keep_modes)


def _keeps(flags, keep_refs):
  if not flags.keep_modes:
    return None
  it = iter(keep_refs)
  return tuple(None if m is None else next(it)[...].astype(f32) for m in flags.keep_modes)


def _forward_kernel(*refs, cfg: StepConfig, flags: _Flags, counts):
  p = cfg.program
  ns, nw, nsm = counts
  (valid_ref, reset_ref, (xp_ref,), state_refs, s0_refs, mask_ref, keep_refs, weight_refs,
   small_refs, out_refs) = split_refs(refs, (flags.masked, flags.reset, 1, ns,
                                              ns * flags.reset, flags.h_mask, flags.num_keeps,
                                              nw, nsm, ns))
  valid_ref, reset_ref, mask_ref = map(optional_ref, (valid_ref, reset_ref, mask_ref))
  reset = None if reset_ref is None else reset_ref[...] > 0
  read = _reader(cfg, state_refs, s0_refs, reset, mask_ref)
  xs = tuple(xp_ref[k].astype(f32) for k in range(p.num_gates))
  states = tuple(_columns(cfg, read, k, r.shape[-1]) for k, r in enumerate(state_refs))
  valid = None if valid_ref is None else valid_ref[...] > 0
  small = tuple(r[...] for r in small_refs)
  new = p.step(small, states, xs, _rprojs(cfg, read, weight_refs), valid,
               _keeps(flags, keep_refs))
  for ref, s in zip(out_refs, new):
    ref[...] = s


def _backward_kernel(*refs, cfg: StepConfig, flags: _Flags, counts):
  p = cfg.program
  ns, nw, nsm = counts
  (valid_ref, (xp_ref,), state_refs, d_new_refs, mask_ref, keep_refs, weight_refs, small_refs,
   (d_xs_ref,), d_rp_refs, d_state_refs, d_small_refs) = split_refs(
       refs, (flags.masked, 1, ns, ns, flags.h_mask, flags.num_keeps, nw, nsm, 1,
              not p.same_grads, ns, nsm))
  valid_ref, mask_ref = optional_ref(valid_ref), optional_ref(mask_ref)
  read = _reader(cfg, state_refs, (), None, mask_ref)
  xs = tuple(xp_ref[k].astype(f32) for k in range(p.num_gates))
  states = tuple(_columns(cfg, read, k, r.shape[-1]) for k, r in enumerate(state_refs))
  valid = None if valid_ref is None else valid_ref[...] > 0
  small = tuple(r[...] for r in small_refs)
  d_new = tuple(r[...] for r in d_new_refs)
  d_small, d_states, d_xs, d_rp = p.step_vjp(small, states, xs, _rprojs(cfg, read, weight_refs),
                                             valid, d_new, _keeps(flags, keep_refs))
  for k, d in enumerate(d_xs):
    d_xs_ref[k] = d.astype(d_xs_ref.dtype)
  for out in d_rp_refs:
    for k, g in enumerate(p.rproj_gates):
      out[k] = d_rp[g].astype(out.dtype)
  for ref, d in zip(d_state_refs, d_states):
    ref[...] = d
  for ref, d in zip(d_small_refs, d_small):
    ref[...] = d.astype(f32)


@dataclasses.dataclass(frozen=True)
class _Specs:
  """BlockSpecs over the grid (batch block b, hidden block j)."""
  cfg: StepConfig
  n: int  # the padded hidden size

  @property
  def tiled(self) -> bool:
    return self.n != self.cfg.block_n

  @property
  def heads(self) -> bool:
    return self.cfg.program.heads > 1

  def rows(self):
    return block_spec((self.cfg.block_b, 1), lambda b, j: (b, 0))

  def xs(self, xs):
    return block_spec((xs.shape[0], self.cfg.block_b, self.cfg.block_n),
                      lambda b, j: (0, b, j))

  def cols(self, width):
    """This program's columns of a state: a column block (a head), else the whole row."""
    if self.tiled:
      return block_spec((self.cfg.block_b, self.cfg.block_n), lambda b, j: (b, j))
    return block_spec((self.cfg.block_b, width), lambda b, j: (b, 0))

  def full(self, width):
    """What the matmuls read: a head's columns, else the whole row."""
    if self.heads:
      return self.cols(width)
    return block_spec((self.cfg.block_b, width), lambda b, j: (b, 0))

  def keep(self, keep):
    if keep.shape[0] != 1:
      return self.cols(keep.shape[-1])
    if self.tiled:
      return block_spec((1, self.cfg.block_n), lambda b, j: (0, j))
    return block_spec(keep.shape, lambda b, j: (0, 0))

  def weight(self, w):
    if w.ndim == 3:
      return block_spec((None, *w.shape[1:]), lambda b, j: (j, 0, 0))
    return block_spec((w.shape[0], self.cfg.block_n), lambda b, j: (0, j))

  def small(self, s):
    if self.tiled:  # separable programs: every small param is [1, N]
      return block_spec((1, self.cfg.block_n), lambda b, j: (0, j))
    return block_spec(s.shape, lambda b, j: (0, 0))

  def d_small(self, s):
    if self.tiled:
      return block_spec((None, 1, self.cfg.block_n), lambda b, j: (b, 0, j))
    return block_spec((None, *s.shape), lambda b, j: (b, 0, 0))


def _option_operands(specs, extras, with_reset):
  """(operand, spec) pairs of the options before xs, and of those after the states."""
  front, back = [], []
  if extras.valid is not None:
    front.append((extras.valid, specs.rows()))
  if with_reset and extras.reset is not None:
    front.append((extras.reset, specs.rows()))
  if extras.h_mask is not None:
    back.append((extras.h_mask, specs.full(extras.h_mask.shape[-1])))
  back += [(k, specs.keep(k)) for k in extras.keeps or () if k is not None]
  return front, back


def _step_forward(cfg, xs, states, weights, small, extras: StepExtras):
  _, b, n = xs.shape
  specs = _Specs(cfg, n)
  front, back = _option_operands(specs, extras, with_reset=True)
  states0 = extras.states0 if extras.reset is not None else ()
  inputs = [*front, (xs, specs.xs(xs)), *[(s, specs.full(s.shape[-1])) for s in states],
            *[(s, specs.full(s.shape[-1])) for s in states0], *back,
            *[(w, specs.weight(w)) for w in weights], *[(s, specs.small(s)) for s in small]]
  kernel = functools.partial(_forward_kernel, cfg=cfg, flags=_Flags.of(extras),
                             counts=(len(states), len(weights), len(small)))
  return tuple(pl.pallas_call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct(s.shape, f32) for s in states],
      grid=(b // cfg.block_b, n // cfg.block_n),
      in_specs=[spec for _, spec in inputs],
      out_specs=[specs.cols(s.shape[-1]) for s in states],
      compiler_params=cfg.target.compiler_params(("parallel", "parallel")),
      interpret=cfg.target.interpret,
      name=f"{type(cfg.program.cell).__name__}_step_fwd",
  )(*[a for a, _ in inputs]))


def _step_backward(cfg, xs, entering, d_new, weights, small, extras: StepExtras):
  """-> (d_xs [G, B, N], d_rprojs per gate (None where no term), direct d entering states,
  d small)."""
  p = cfg.program
  g, b, n = xs.shape
  nb = b // cfg.block_b
  specs = _Specs(cfg, n)
  front, back = _option_operands(specs, extras, with_reset=False)
  inputs = [*front, (xs, specs.xs(xs)), *[(s, specs.full(s.shape[-1])) for s in entering],
            *[(d, specs.cols(d.shape[-1])) for d in d_new], *back,
            *[(w, specs.weight(w)) for w in weights], *[(s, specs.small(s)) for s in small]]
  gr = len(p.rproj_gates)
  rp_shapes = [] if p.same_grads else [jax.ShapeDtypeStruct((gr, b, n), xs.dtype)]
  rp_specs = [] if p.same_grads else [
      block_spec((gr, cfg.block_b, cfg.block_n), lambda i, j: (0, i, j))]
  kernel = functools.partial(_backward_kernel, cfg=cfg, flags=_Flags.of(extras),
                             counts=(len(entering), len(weights), len(small)))
  outs = pl.pallas_call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct(xs.shape, xs.dtype), *rp_shapes,
                 *[jax.ShapeDtypeStruct(s.shape, f32) for s in entering],
                 *[jax.ShapeDtypeStruct((nb, *s.shape), f32) for s in small]],
      grid=(nb, n // cfg.block_n),
      in_specs=[spec for _, spec in inputs],
      out_specs=[specs.xs(xs), *rp_specs, *[specs.cols(s.shape[-1]) for s in entering],
                 *[specs.d_small(s) for s in small]],
      compiler_params=cfg.target.compiler_params(("parallel", "parallel")),
      interpret=cfg.target.interpret,
      name=f"{type(p.cell).__name__}_step_bwd",
  )(*[a for a, _ in inputs])
  d_xs, d_rp, outs = outs[0], outs[1:1 + len(rp_shapes)], outs[1 + len(rp_shapes):]
  d_states, d_small = outs[:len(entering)], outs[len(entering):]
  if p.same_grads:  # d rprojs is d xs at the projected gates
    stacked, index = d_xs, {gate: gate for gate in p.rproj_gates}
  else:
    stacked, index = d_rp[0], {gate: k for k, gate in enumerate(p.rproj_gates)}
  d_rprojs = tuple(stacked[index[k]] if k in index else None for k in range(g))
  return d_xs, d_rprojs, tuple(d_states), tuple(d.sum(0) for d in d_small)


def _step_cotangents(cfg, xs, entering, d_new, weights, small, extras, d_states0):
  """The XLA side of a step's backward around the kernel: -> (d_xs, d_rprojs, d previous
  states (clipped), d_states0 (reset rows added), d_small)."""
  p = cfg.program
  d_xs, d_rprojs, d_st, d_sm = _step_backward(cfg, xs, entering, d_new, weights, small, extras)
  d_entering = p.add_transposed(d_st, d_rprojs, weights, extras.h_mask)
  d_prev, d_states0 = autodiff.split_reset(
      d_entering, d_states0, None if extras.reset is None else extras.reset > 0, cfg.grad_clip)
  return d_xs, d_rprojs, d_prev, d_states0, d_sm


# -- one step, differentiable -----------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_step(cfg, xs, states, weights, small, states0, extras):
  return _step_forward(cfg, xs, states, weights, small, extras._replace(states0=states0))


def _fused_step_fwd(cfg, xs, states, weights, small, states0, extras):
  out = _fused_step(cfg, xs, states, weights, small, states0, extras)
  return out, (xs, states, weights, small, states0, extras)


def _fused_step_bwd(cfg, residuals, d_new):
  xs, states, weights, small, states0, extras = residuals
  p = cfg.program
  reset = None if extras.reset is None else extras.reset > 0
  entering = p.enter(states, states0, reset)
  zeros = tuple(jnp.zeros(s.shape, f32) for s in states0 or ())
  d_xs, d_rprojs, d_states, d_states0, d_small = _step_cotangents(
      cfg, xs, entering, d_new, weights, small, extras, zeros)
  d_rp = jnp.stack([d_rprojs[g] for g in p.rproj_gates])[None]
  d_weights = p.weight_grads(tuple(s[None] for s in p.rinputs(entering, extras.h_mask)), d_rp,
                             weights)
  cast = lambda ds, xs: tuple(d.astype(x.dtype) for d, x in zip(ds, xs))
  return (d_xs, d_states, d_weights, cast(d_small, small),
          None if states0 is None else cast(d_states0, states0), None)


_fused_step.defvjp(_fused_step_fwd, _fused_step_bwd)


def fused_step(cfg: StepConfig, xs, states, weights, small, valid, reset=None, states0=None,
               h_mask=None, keeps=None):
  """One step on the kernel: xs [G, B, N], states ([B, w] f32, ...), valid [B, 1] int32 (0
  freezes a row) or None, and the options of `StepExtras` -> new states. Its VJP gives every
  weight's gradient for this step (and states0's, through the reset rows)."""
  states0 = None if states0 is None else tuple(states0)
  return _fused_step(cfg, xs, tuple(states), tuple(weights), tuple(small), states0,
                     StepExtras(valid, reset, None, h_mask, keeps))


def step_reference(program: Program, xs, states, weights, small, valid, reset=None,
                   states0=None, h_mask=None, keeps=None):
  """The same function as `fused_step` in plain jnp."""
  xs = tuple(xs[k].astype(f32) for k in range(program.num_gates))
  states = program.enter(states, states0, None if reset is None else reset > 0)
  return program.step(small, states, xs, program.rprojs(program.rinputs(states, h_mask), weights),
                      None if valid is None else valid > 0, keeps)


# -- a whole sequence of steps, with the weight gradients hoisted out of the loop ----------------

def _valid_at(lengths, t):
  return None if lengths is None else (t < lengths).astype(jnp.int32)


def _streamed(extras):
  """The per-step inputs of the scans: resets [T, B, 1] and zoneout weights [T, B, w]."""
  keeps = None if extras.keeps is None else tuple(
      k if k is not None and k.ndim == 3 else None for k in extras.keeps)
  return extras.resets, keeps


def _step_extras(extras, states0, t, reset, streamed_keeps):
  keeps = None
  if extras.keeps is not None:
    keeps = tuple(s if s is not None else k for k, s in zip(extras.keeps, streamed_keeps))
  return StepExtras(_valid_at(extras.lengths, t), reset, states0, extras.h_mask, keeps)


def _scan_forward(cfg, xp, states0, weights, small, extras):
  def body(states, inputs):
    xp_t, t, (reset, keeps) = inputs
    new = _step_forward(cfg, xp_t, states, weights, small,
                        _step_extras(extras, states0, t, reset, keeps))
    return new, new

  finals, seqs = jax.lax.scan(body, tuple(states0),
                              (xp, jnp.arange(xp.shape[0]), _streamed(extras)))
  return seqs, finals


def scan_backward(cfg, xp, entering, d_seqs, d_finals, weights, small, extras):
  p = cfg.program

  def body(carry, inputs):
    d_states, d_states0, d_small = carry
    xp_t, entering_t, d_seq_t, t, (reset, keeps) = inputs
    d_new = tuple(a + b for a, b in zip(d_states, d_seq_t))
    d_xs, d_rprojs, d_states, d_states0, d_sm = _step_cotangents(
        cfg, xp_t, entering_t, d_new, weights, small,
        _step_extras(extras, None, t, reset, keeps), d_states0)
    d_rp = None if p.same_grads else jnp.stack([d_rprojs[g] for g in p.rproj_gates])
    return (d_states, d_states0, tuple(a + b for a, b in zip(d_small, d_sm))), (d_xs, d_rp)

  zeros = lambda arrays: tuple(jnp.zeros(a.shape, f32) for a in arrays)
  (d_states, d_resets, d_small), (d_xp, d_rp) = jax.lax.scan(
      body, (tuple(d_finals), zeros(d_finals), zeros(small)),
      (xp, entering, d_seqs, jnp.arange(xp.shape[0]), _streamed(extras)), reverse=True)
  return d_xp, d_rp, tuple(a + b for a, b in zip(d_states, d_resets)), d_small


_stepped_op = autodiff.sequence_op(_scan_forward, scan_backward)


def stepped_sequence(cfg: StepConfig, xp, states0, weights, small, lengths, resets=None,
                     h_mask=None, keeps=None):
  """The step kernel in a scan, as one differentiable sequence op with the same arguments and
  results as `sequence.fused_sequence`."""
  return _stepped_op(cfg, xp, tuple(states0), tuple(weights), tuple(small),
                     autodiff.Extras(lengths, resets, h_mask, keeps))
