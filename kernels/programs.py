"""A cell as the kernels run it: its per-gate-block interface in the kernels' padded layouts.

A kernel never slices a value along its lanes (Triton cannot, Mosaic only at tile boundaries),
so a cell declares its gate math on separate [B, N] blocks (`rnn_research.cells.base`:
`block_pointwise` and what it reads), and this module lays its arrays out for the kernels:

    states  : the carry as a tuple of f32 state vectors [B, w] (`cell.carry_states`)
    xs      : the input projection (biases folded in, `cell.block_xs`) as one [B, N] block per
              gate
    terms   : the recurrent matmuls, one weight per (source state, target gate), from the cell's
              `recurrent_blocks`: [w_src, N], or with head-wise recurrence [heads, d, d] (the
              diagonal blocks only); rprojs[gate] = Σ states[src] @ weight over the gate's terms
    small   : what the gate math reads besides (`cell.small_params`): vectors as rows [1, N],
              matrices padded whole

`pack` turns library params into these arrays (padding batch and hidden to the kernel's tile);
`unpack` turns the kernel's state sequences back into the library's (final carry, ys). Both
are plain differentiable jnp, so gradients reach the library params through them. Nothing here
knows a cell family: the cell is passed in and used only through that interface, so the kernels
import nothing from `rnn_research`.

Head-wise recurrence (`cell.num_heads` > 1) of a column-separable cell makes every head an
independent recurrence over its own columns: the hidden axis is laid out head by head, each
head padded to its own tile ([heads·d_p]), and the kernels run one program per head holding
only that head's [d_p, d_p] blocks. Cells whose gate math mixes columns (layer norm, matrices
inside the gate math) get the blocks packed into a dense block-diagonal weight instead.

Per-step options (see `step`): resets choose the initial state as the state entering a step;
the recurrent dropout mask multiplies h where it enters the recurrent matmuls; zoneout mixes
the entering state back into the new one; lengths freeze rows past their end.

Axis letters: T time, B batch, G gates, N hidden_size (padded Np), Ny output size (padded).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

f32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Packed:
  """Kernel-layout arrays. xp [T, G, Bp, Np]; states0 tuple of [Bp, w]; weights tuple of
  [w_src, Np] or [heads, d_p, d_p] (one per term); small tuple of 2-D arrays (see the module
  docstring)."""
  xp: jax.Array
  states0: tuple
  weights: tuple
  small: tuple


def pad_to(a, shape):
  """Zero-pads `a` at the end of each axis to `shape`."""
  return jnp.pad(a, [(0, s - d) for d, s in zip(a.shape, shape)])


def column_blocks(w, count, n):
  """Splits the last axis of w [K, count·n] into `count` blocks [K, n]."""
  return [w[..., k * n:(k + 1) * n] for k in range(count)]


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the true hidden (n) and output (ny) columns sit in the padded lanes: `groups`
  groups of `block` lanes, group k holding columns k·n/groups ... (zero lanes after them).
  groups = 1 is the plain layout, padded at the end; outputs (LSTMP's Ny) always are."""
  n: int
  ny: int
  groups: int
  block: int
  padded_ny: int

  @property
  def padded_n(self) -> int:
    return self.groups * self.block

  def hidden(self, a):
    """[..., n] -> [..., padded_n]."""
    g, d = self.groups, self.n // self.groups
    a = a.reshape(*a.shape[:-1], g, d)
    return pad_to(a, (*a.shape[:-1], self.block)).reshape(*a.shape[:-2], g * self.block)

  def unhidden(self, a):
    """[..., padded_n] -> [..., n]."""
    g, d = self.groups, self.n // self.groups
    return a.reshape(*a.shape[:-1], g, self.block)[..., :d].reshape(*a.shape[:-1], self.n)

  def lanes(self, a, width: int):
    """Pads an [..., width] axis of hidden (width n) or output (width ny) columns."""
    if width == self.n:
      return self.hidden(a)
    return pad_to(a, (*a.shape[:-1], self.padded_ny))

  def unlanes(self, a, width: int):
    return self.unhidden(a) if width == self.n else a[..., :width]


@dataclasses.dataclass(frozen=True)
class Program:
  """What the kernels need to know about one cell; hashable, so it is a static argument.

  cell: the cell definition, used only through its per-gate-block interface.
  num_gates: G, the [B, N] blocks of the input projection.
  terms: ((source state, target gate), ...), one recurrent weight each, in `Packed.weights` order.
  output_state: the state that is the cell's output y (and the carry's h).
  separable: the gate math acts column by column, so a kernel may tile the hidden axis.
  same_grads: d rprojs[gate] == d xs[gate] for every term's gate (the projection and the
    input only meet in a sum), so the backward kernel need not write d rprojs.
  heads: independent head recurrences the kernels run as separate programs (1: dense R).
  inner: where `small` holds the matrix the gate math applies to a column-wise input
    (`inner_input`; Cho's R_n), which the persistent kernels split like R, or None.
  """
  cell: Any

  @property
  def num_gates(self) -> int:
    return self.cell.num_gates

  @property
  def terms(self) -> tuple[tuple[int, int], ...]:
    return tuple((src, gate) for sources, gates in self.cell.recurrent_blocks
                 for src in sources for gate in gates)

  @property
  def output_state(self) -> int:
    return self.cell.output_state

  @property
  def separable(self) -> bool:
    return self.cell.separable

  @property
  def same_grads(self) -> bool:
    return self.cell.same_grads

  @property
  def heads(self) -> int:
    return getattr(self.cell, "num_heads", 1) if self.separable else 1

  def state_widths(self, n: int, ny: int) -> tuple[int, ...]:
    """Widths of the state vectors for hidden size n and output size ny."""
    return self.cell.state_widths(n, ny)

  @property
  def rproj_gates(self) -> tuple[int, ...]:
    """The gates that receive a recurrent projection, in increasing order."""
    return tuple(sorted({gate for _, gate in self.terms}))

  def layout(self, padded_n: int, padded_ny: int) -> Layout:
    """The lane layout for hidden padded to `padded_n` (with heads: heads equal groups)."""
    cell = self.cell
    if padded_n % self.heads:
      raise ValueError(f"padded_n must be a multiple of heads={self.heads}, got {padded_n}")
    return Layout(cell.hidden_size, cell.output_size, self.heads, padded_n // self.heads,
                  padded_ny if self.heads == 1 else padded_n)

  @property
  def small_names(self) -> tuple[str, ...]:
    """Names of the `small` arrays, in order."""
    return self.cell.small_names

  def small_shapes(self) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the cell's `small_params` (computed without arrays)."""
    params = {k: jax.ShapeDtypeStruct(shape, f32) for k, shape in self.cell.param_shapes().items()}
    return {k: a.shape for k, a in jax.eval_shape(self.cell.small_params, params).items()}

  # -- library <-> kernel layouts ---------------------------------------------------------
  def pack(self, params, xp, carry0, padded_b: int, padded_n: int, padded_ny: int) -> Packed:
    """params, xp [T, B, G·N] (the cell's input projection), carry0 -> kernel arrays, batch
    padded to `padded_b`, hidden to `padded_n` (heads: equal groups), output to `padded_ny`."""
    cell, n = self.cell, self.cell.hidden_size
    layout = self.layout(padded_n, padded_ny)
    xp = cell.block_xs(params, xp)
    t, b, _ = xp.shape
    xp = jnp.transpose(layout.hidden(xp.reshape(t, b, self.num_gates, n)), (0, 2, 1, 3))
    xp = pad_to(xp, (t, self.num_gates, padded_b, layout.padded_n))
    states0 = self._pack_states(layout, cell.carry_states(carry0), padded_b)
    return Packed(xp, states0, self._pack_weights(layout, params),
                  self._pack_small(layout, cell.small_params(params)))

  def _pack_states(self, layout: Layout, states, padded_b: int) -> tuple:
    """[B, w] per state (true widths) -> f32 [Bp, w_p] in the kernel's lanes."""
    return tuple(pad_to(layout.lanes(s.astype(f32), s.shape[-1]), (padded_b, w))
                 for s, w in zip(states, self.state_widths(layout.padded_n, layout.padded_ny)))

  def lanes_of_state(self, layout: Layout, a, k: int):
    """Pads the last axis of `a`, columns of state k, to the kernel's lanes."""
    return layout.lanes(a, self.state_widths(layout.n, layout.ny)[k])

  def unpack(self, seqs, finals, lengths, batch: int, dtype, layout: Layout):
    """seqs/finals: the kernel's state sequences [T, Bp, w] and final states [Bp, w] in
    `layout` -> (final carry, ys [T, B, out]) in the library's structure and `dtype`."""
    cell = self.cell
    n, out = cell.hidden_size, cell.output_size
    h = layout.unlanes(seqs[self.output_state][:, :batch], out)
    if lengths is not None:
      h = jnp.where((jnp.arange(h.shape[0])[:, None] < lengths[None, :])[..., None], h, 0)
    finals = tuple(layout.unlanes(f[:batch], w).astype(dtype)
                   for f, w in zip(finals, self.state_widths(n, out)))
    return cell.carry_of(finals), h.astype(dtype)

  def _pack_weights(self, layout: Layout, params):
    """One weight per term: the column block of the gate (and, for a weight that reads
    several states, the row block of the source), padded to the kernel's lanes."""
    cell, n = self.cell, self.cell.hidden_size
    widths = self.state_widths(layout.padded_n, layout.padded_ny)
    true_widths = self.state_widths(n, cell.output_size)
    out = []
    for name, (sources, gates) in zip(cell.recurrent_weights, cell.recurrent_blocks):
      w = params[name]
      if w.ndim == 4 and self.heads > 1:  # [heads, d, G, d] -> per gate [heads, d_p, d_p]
        out += [pad_to(w[:, :, k], (self.heads, layout.block, layout.block))
                for k in range(len(gates))]
        continue
      if w.ndim == 4:  # head blocks as a dense block-diagonal [N, G·N]
        heads = w.shape[0]
        w = jnp.einsum("kigj,kl->kiglj", w, jnp.eye(heads, dtype=w.dtype)).reshape(
            n, len(gates) * n)
      starts = [sum(true_widths[s] for s in sources[:i]) for i in range(len(sources) + 1)]
      for i, src in enumerate(sources):
        rows = w[starts[i]:starts[i + 1]]
        out += [pad_to(layout.hidden(block), (widths[src], layout.padded_n))
                for block in column_blocks(rows, len(gates), n)]
    return tuple(out)

  def _pack_small(self, layout: Layout, small: dict):
    """Vectors [N] as rows in the hidden lanes; matrices padded at the end of both axes."""
    padded = {layout.n: layout.padded_n, layout.ny: layout.padded_ny}
    return tuple(layout.hidden(small[name][None]) if small[name].ndim == 1
                 else pad_to(small[name], tuple(padded[d] for d in small[name].shape))
                 for name in self.small_names)

  # -- the math, on per-gate blocks (used by the kernels and the references) ---------------
  @property
  def inner(self) -> int | None:
    """Index in `small` of the cell's `inner_matrix` (Cho's R_n), or None."""
    name = self.cell.inner_matrix
    return None if name is None else self.small_names.index(name)

  def pointwise(self, small, states, xs, rprojs, inner=None):
    """One step's gate math, the cell's own: small, states [B, w] f32, xs [B, N] per gate,
    rprojs per gate ([B, N] or None) -> new states. Given `inner` (the inner matrix's product,
    [B, N]), the second stage alone (`small` then may hold None for the matrix)."""
    small = dict(zip(self.small_names, small))
    if inner is None:
      return self.cell.block_pointwise(small, states, xs, rprojs)
    return self.cell.block_pointwise_inner(small, states, xs, rprojs, inner)

  def inner_input(self, small, states, xs, rprojs):
    """The first stage of a cell with an inner matrix: what the matrix multiplies [B, N]."""
    return self.cell.block_inner_input(dict(zip(self.small_names, small)), states, xs, rprojs)

  def enter(self, states, states0, reset):
    """The states entering a step: states0 in the rows where reset [B, 1] is set."""
    if reset is None:
      return tuple(states)
    return tuple(jnp.where(reset, s0, s) for s, s0 in zip(states, states0))

  def rinputs(self, states, h_mask):
    """What the recurrent matmuls read: h ⊙ h_mask (recurrent dropout), the rest as is."""
    if h_mask is None:
      return tuple(states)
    return tuple(s * h_mask if k == self.output_state else s for k, s in enumerate(states))

  def rprojs(self, states, weights):
    """The recurrent matmuls: per gate Σ states[src] @ w (f32 accumulation) or None.
    `weights` may be arrays or kernel refs, read at each use."""
    out = [None] * self.num_gates
    for (src, gate), w in zip(self.terms, weights):
      term = _matmul(states[src], w)
      out[gate] = term if out[gate] is None else out[gate] + term
    return tuple(out)

  def step(self, small, states, xs, rprojs, valid, keeps=None, inner=None):
    """`pointwise`, then zoneout (keeps: per state None or the weight of the entering state,
    [B, w] or [1, w]), then lengths: where valid [B, 1] is False the states stay unchanged."""
    new = self.pointwise(small, states, xs, rprojs, inner)
    if keeps is not None:
      new = tuple(a if k is None else k * b + (1 - k) * a for a, b, k in zip(new, states, keeps))
    if valid is None:
      return new
    return tuple(jnp.where(valid, a, b) for a, b in zip(new, states))

  def step_vjp(self, small, states, xs, rprojs, valid, d_new, keeps=None):
    """Cotangents of one step given its recurrent projections: -> (d_small, d_states (the
    direct part, without the recurrent matmuls' transposes), d_xs per gate, d_rprojs per gate
    (None where no term))."""
    step = lambda sm, st, x, r: self.step(sm, st, x, r, valid, keeps)
    return _vjp(step, small, states, xs, rprojs, tuple(d_new))

  def inner_step_vjp(self, small, states, xs, rprojs, inner, valid, d_new, keeps=None):
    """`step_vjp` of the second stage, given the inner matrix's product: -> (..., d_inner)."""
    step = lambda sm, st, x, r, i: self.step(sm, st, x, r, valid, keeps, i)
    return _vjp(step, small, states, xs, rprojs, tuple(d_new), inner)

  def inner_input_vjp(self, small, states, xs, rprojs, d_input):
    """Cotangents of the first stage's `inner_input`, as `step_vjp`'s."""
    return _vjp(self.inner_input, small, states, xs, rprojs, d_input)

  def add_transposed(self, d_states, d_rprojs, weights, h_mask=None):
    """d_states[src] += (d_rprojs[gate] @ wᵀ) (⊙ h_mask for h) for every term."""
    d_in = [None] * len(d_states)
    for (src, gate), w in zip(self.terms, weights):
      term = _matmul_t(d_rprojs[gate], w)
      d_in[src] = term if d_in[src] is None else d_in[src] + term
    if h_mask is not None and d_in[self.output_state] is not None:
      d_in[self.output_state] = d_in[self.output_state] * h_mask
    return tuple(d if t is None else d + t for d, t in zip(d_states, d_in))

  def weight_grads(self, rinputs, d_rprojs, weights):
    """Every recurrent weight's gradient as one matmul over all steps: rinputs [T, B, w] per
    state (what the matmuls read), d_rprojs [T, Gr, B, N] (rproj_gates order)."""
    index = {g: k for k, g in enumerate(self.rproj_gates)}
    out = []
    for (src, gate), w in zip(self.terms, weights):
      r, d = rinputs[src], d_rprojs[:, index[gate]]
      if w.ndim == 3:
        heads = lambda a: a.reshape(*a.shape[:-1], w.shape[0], -1)
        g = jnp.einsum("tbhi,tbhj->hij", heads(r), heads(d), preferred_element_type=f32)
      else:
        g = jnp.einsum("tbi,tbj->ij", r, d, preferred_element_type=f32)
      out.append(g.astype(w.dtype))
    return tuple(out)


def _vjp(fun, small, states, xs, rprojs, cotangent, *rest):
  """vjp of fun(small, states, xs, rprojs, *rest) at `cotangent` -> (d_small, d_states, d_xs,
  d_rprojs (None where rprojs are None), *d_rest)."""
  present = tuple(r for r in rprojs if r is not None)

  def f(small, states, xs, present, *rest):
    it = iter(present)
    return fun(small, states, xs, tuple(None if r is None else next(it) for r in rprojs), *rest)

  _, vjp = jax.vjp(f, small, states, xs, present, *rest)
  d_small, d_states, d_xs, d_present, *d_rest = vjp(cotangent)
  it = iter(d_present)
  return (d_small, d_states, d_xs, tuple(None if r is None else next(it) for r in rprojs),
          *d_rest)


def _matmul(s, w):
  """s [B, K] @ w: [K, N] (an array or a kernel ref), or head blocks [heads, k, n] on the
  columns of s split into heads (outside kernels only)."""
  if len(w.shape) == 2:
    return jnp.dot(s.astype(w.dtype), w[...], preferred_element_type=f32)
  b, h = s.shape[0], w.shape[0]
  out = jnp.einsum("bhk,hkn->bhn", s.reshape(b, h, -1).astype(w.dtype), w,
                   preferred_element_type=f32)
  return out.reshape(b, -1)


def _matmul_t(d, w):
  """d [B, N] @ wᵀ, for w as in `_matmul`."""
  if len(w.shape) == 2:
    return jax.lax.dot_general(d.astype(w.dtype), w[...], (((1,), (1,)), ((), ())),
                               preferred_element_type=f32)
  b, h = d.shape[0], w.shape[0]
  out = jnp.einsum("bhn,hkn->bhk", d.reshape(b, h, -1).astype(w.dtype), w,
                   preferred_element_type=f32)
  return out.reshape(b, -1)


def program_for(cell) -> Program:
  """The kernel program of `cell`, a cell definition with the per-gate-block interface of
  `rnn_research.cells.base.CellDef`; ValueError for anything else."""
  if not hasattr(cell, "block_pointwise"):
    raise ValueError(f"cell must declare its gate math on per-gate blocks (block_pointwise, "
                     f"see rnn_research.cells.base) for the Pallas kernels, got "
                     f"{type(cell).__name__}")
  return Program(cell)
