"""Cells rewritten for the kernels: gate-major layouts and the pointwise math on per-gate blocks.

A kernel never slices a value along its lanes (Triton cannot, Mosaic only at tile boundaries),
so every cell is re-expressed on separate [B, N] blocks:

    states  : the carry as a tuple of f32 state vectors [B, w] (LSTM: c, h[, gate_1..gate_S])
    xs      : the input projection (biases folded in) as one [B, N] block per gate
    terms   : the recurrent matmuls, one weight [w_src, N] per (source state, target gate);
              rprojs[gate] = Σ states[src] @ weight over the gate's terms
    small   : what the pointwise math reads besides (peepholes [1, N], GRU's c_n [1, N],
              LSTMP's P [N, Ny], Cho-GRU's R_n [N, N])

`pack` turns library params into these arrays (padding batch and hidden to the kernel's tile);
`unpack` turns the kernel's state sequences back into the library's (final carry, ys). Both
are plain differentiable jnp, so gradients reach the library params through them.

Axis letters: T time, B batch, G gates, N hidden_size (padded Np), Ny output size (padded).
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from rnn_research.cells import ElmanDef, GRUDef, LSTMDef
from rnn_research.cells import base
from rnn_research.cells.lstm import LSTMCarry

f32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Packed:
  """Kernel-layout arrays. xp [T, G, Bp, Np]; states0 tuple of [Bp, w]; weights tuple of
  [w_src, Np] (one per term); small tuple of 2-D arrays (see the module docstring)."""
  xp: jax.Array
  states0: tuple
  weights: tuple
  small: tuple


def pad_to(a, shape):
  """Zero-pads `a` at the end of each axis to `shape`."""
  return jnp.pad(a, [(0, s - d) for d, s in zip(a.shape, shape)])


def gate_major(xp, num_gates, n, padded_b, padded_n):
  """[T, B, G·N] -> [T, G, Bp, Np]."""
  t, b, _ = xp.shape
  xp = jnp.transpose(xp.reshape(t, b, num_gates, n), (0, 2, 1, 3))
  return pad_to(xp, (t, num_gates, padded_b, padded_n))


def column_blocks(w, count, n):
  """Splits the last axis of w [K, count·n] into `count` blocks [K, n]."""
  return [w[..., k * n:(k + 1) * n] for k in range(count)]


@dataclasses.dataclass(frozen=True)
class Program:
  """What the kernels need to know about one cell; hashable, so it is a static argument.

  num_gates: G, the [B, N] blocks of the input projection.
  terms: ((source state, target gate), ...), one recurrent weight each, in `Packed.weights` order.
  output_state: the state that is the cell's output y (and the carry's h).
  separable: the pointwise math acts column by column, so a kernel may tile the hidden axis.
  same_grads: d rprojs[gate] == d xs[gate] for every term's gate (the projection and the
    input only meet in a sum), so the backward kernel need not write d rprojs.
  """
  cell: base.CellDef
  num_gates: int
  terms: tuple
  output_state: int
  separable: bool
  same_grads: bool

  # -- sizes ------------------------------------------------------------------------------
  def state_widths(self, n: int, ny: int) -> tuple[int, ...]:
    """Widths of the state vectors for hidden size n and output size ny."""
    if isinstance(self.cell, LSTMDef):
      spec = self.cell.spec
      return (n, ny) + (n,) * len(spec.sigmoid_gates) * spec.full_gate_recurrence
    return (n,)

  @property
  def rproj_gates(self) -> tuple[int, ...]:
    """The gates that receive a recurrent projection, in increasing order."""
    return tuple(sorted({gate for _, gate in self.terms}))

  # -- library <-> kernel layouts ---------------------------------------------------------
  def pack(self, params, xp, carry0, padded_b: int, padded_n: int, padded_ny: int) -> Packed:
    cell, n = self.cell, self.cell.hidden_size
    xp = xp + params["b"]
    if isinstance(cell, GRUDef) and cell.reset_after:  # c_r, c_u only add to the pre-activation
      xp = xp + jnp.concatenate([params["c"][:2 * n], jnp.zeros((n,), params["c"].dtype)])
    xp = gate_major(xp, self.num_gates, n, padded_b, padded_n)
    widths = self.state_widths(padded_n, padded_ny)
    states0 = tuple(pad_to(s.astype(f32), (padded_b, w))
                    for s, w in zip(self._carry_states(carry0), widths))
    weights = tuple(pad_to(w, (widths[src], padded_n))
                    for w, (src, _) in zip(self._term_weights(params), self.terms))
    small = tuple(pad_to(s, shape) for s, shape in
                  zip(self._small(params), self._small_shapes(padded_n, padded_ny)))
    return Packed(xp, states0, weights, small)

  def unpack(self, seqs, finals, lengths, batch: int, dtype):
    """seqs/finals: the kernel's state sequences [T, Bp, w] and final states [Bp, w] ->
    (final carry, ys [T, B, out]) in the library's structure and `dtype`."""
    cell = self.cell
    n, out = cell.hidden_size, cell.output_size
    h = seqs[self.output_state][:, :batch, :out]
    if lengths is not None:
      h = jnp.where((jnp.arange(h.shape[0])[:, None] < lengths[None, :])[..., None], h, 0)
    finals = [f[:batch] for f in finals]
    cast = lambda a: a.astype(dtype)
    if isinstance(cell, LSTMDef):
      gates = None
      if cell.spec.full_gate_recurrence:
        gates = cast(jnp.concatenate([g[:, :n] for g in finals[2:]], axis=-1))
      return LSTMCarry(cast(finals[0][:, :n]), cast(finals[1][:, :out]), gates), cast(h)
    return cast(finals[0][:, :n]), cast(h)

  def _carry_states(self, carry):
    if isinstance(self.cell, LSTMDef):
      n = self.cell.hidden_size
      gates = column_blocks(carry.gates, len(self.cell.spec.sigmoid_gates), n) \
          if self.cell.spec.full_gate_recurrence else []
      return (carry.c, carry.h, *gates)
    return (carry,)

  def _term_weights(self, params):
    cell, n = self.cell, self.cell.hidden_size
    if isinstance(cell, LSTMDef):
      weights = column_blocks(params["R"], self.num_gates, n)
      if cell.spec.full_gate_recurrence:
        s = len(cell.spec.sigmoid_gates)
        rows = [params["R_gates"][i * n:(i + 1) * n] for i in range(s)]
        weights += [column_blocks(rows[src], s, n)[tgt] for tgt in range(s) for src in range(s)]
      return weights
    if isinstance(cell, GRUDef):
      return column_blocks(params["R"], 3 if cell.reset_after else 2, n)
    return [params["R"]]

  def _small(self, params):
    cell, n = self.cell, self.cell.hidden_size
    if isinstance(cell, LSTMDef):
      small = ([params[f"p_{g}"][None] for g in cell.spec.sigmoid_gates]
               if cell.spec.peepholes else [])
      return small + ([params["P"]] if cell.proj_size else [])
    if isinstance(cell, GRUDef):
      return [params["c"][None, 2 * n:]] if cell.reset_after else [params["R_n"]]
    return []

  def _small_shapes(self, n, ny):
    cell = self.cell
    if isinstance(cell, LSTMDef):
      shapes = [(1, n)] * len(cell.spec.sigmoid_gates) * cell.spec.peepholes
      return shapes + ([(n, ny)] if cell.proj_size else [])
    if isinstance(cell, GRUDef):
      return [(1, n)] if cell.reset_after else [(n, n)]
    return []

  # -- the math, on per-gate blocks (used by the kernels and the references) ---------------
  def pointwise(self, small, states, xs, rprojs):
    """One step's gate math: small, states [B, w] f32, xs [B, N] per gate, rprojs per gate
    ([B, N] or None) -> new states."""
    return _POINTWISE[type(self.cell)](self.cell, small, states, xs, rprojs)

  def rprojs(self, states, weights):
    """The recurrent matmuls: per gate Σ states[src] @ w (f32 accumulation) or None.
    `weights` may be arrays or kernel refs, read at each use."""
    out = [None] * self.num_gates
    for (src, gate), w in zip(self.terms, weights):
      term = jnp.dot(states[src].astype(w.dtype), w[...], preferred_element_type=f32)
      out[gate] = term if out[gate] is None else out[gate] + term
    return tuple(out)

  def step(self, small, states, xs, rprojs, valid):
    """`pointwise` with lengths: where valid [B, 1] is False the states stay unchanged."""
    new = self.pointwise(small, states, xs, rprojs)
    if valid is None:
      return new
    return tuple(jnp.where(valid, a, b) for a, b in zip(new, states))

  def step_vjp(self, small, states, xs, rprojs, valid, d_new):
    """Cotangents of one step given its recurrent projections: -> (d_small, d_states (the
    direct part, without the recurrent matmuls' transposes), d_xs per gate, d_rprojs per gate
    (None where no term))."""
    present = tuple(r for r in rprojs if r is not None)

    def f(small, states, xs, present):
      it = iter(present)
      full = tuple(None if r is None else next(it) for r in rprojs)
      return self.step(small, states, xs, full, valid)

    _, vjp = jax.vjp(f, small, states, xs, present)
    d_small, d_states, d_xs, d_present = vjp(tuple(d_new))
    it = iter(d_present)
    return d_small, d_states, d_xs, tuple(None if r is None else next(it) for r in rprojs)

  def add_transposed(self, d_states, d_rprojs, weights):
    """d_states[src] += d_rprojs[gate] @ wᵀ for every term."""
    d_states = list(d_states)
    for (src, gate), w in zip(self.terms, weights):
      d_states[src] = d_states[src] + jax.lax.dot_general(
          d_rprojs[gate].astype(w.dtype), w[...], (((1,), (1,)), ((), ())),
          preferred_element_type=f32)
    return tuple(d_states)

  def weight_grads(self, prev_states, d_rprojs, weights):
    """Every recurrent weight's gradient as one matmul over all steps:
    prev_states [T, B, w] per state, d_rprojs [T, Gr, B, N] (rproj_gates order)."""
    index = {g: k for k, g in enumerate(self.rproj_gates)}
    return tuple(jnp.einsum("tbi,tbj->ij", prev_states[src], d_rprojs[:, index[gate]],
                            preferred_element_type=f32).astype(w.dtype)
                 for (src, gate), w in zip(self.terms, weights))


# -- pointwise functions per family ----------------------------------------------------------

def _lstm_pointwise(cell: LSTMDef, small, states, xs, rprojs):
  spec = cell.spec
  names = spec.gate_names
  pre = {}
  for k, name in enumerate(names):
    pre[name] = xs[k] if rprojs[k] is None else xs[k] + rprojs[k]
  peep = dict(zip(spec.sigmoid_gates, small)) if spec.peepholes else {}
  c_prev = states[0]

  def gate(name, cell_state):
    if name not in pre:
      return None
    a = pre[name] + peep[name] * cell_state if name in peep else pre[name]
    return base.sigmoid(a)

  z = base.ACTIVATIONS[spec.input_activation](pre["z"])
  i, f = gate("i", c_prev), gate("f", c_prev)
  c = z if i is None else z * i
  if spec.forget_gate == "gate":
    c = c + f * c_prev
  elif spec.forget_gate == "coupled":
    c = c + (1 - i) * c_prev
  else:
    c = c + c_prev
  o = gate("o", c)
  y = base.ACTIVATIONS[spec.output_activation](c)
  if o is not None:
    y = y * o
  if cell.proj_size:  # in f32: Triton needs equal operand dtypes in this dot's transposes
    y = jnp.dot(y, small[-1].astype(f32), preferred_element_type=f32)
  if not spec.full_gate_recurrence:
    return c, y
  present = {"i": i, "f": f, "o": o}
  return (c, y, *[present[g] for g in spec.sigmoid_gates])


def _gru_pointwise(cell: GRUDef, small, states, xs, rprojs):
  (h,) = states
  r = base.sigmoid(xs[0] + rprojs[0])
  u = base.sigmoid(xs[1] + rprojs[1])
  if cell.reset_after:
    cand = jnp.tanh(xs[2] + r * (rprojs[2] + small[0]))
  else:
    r_n = small[0].astype(f32)  # f32, as LSTMP's projection
    cand = jnp.tanh(xs[2] + jnp.dot(r * h, r_n, preferred_element_type=f32))
  return ((1 - u) * cand + u * h,)


def _elman_pointwise(cell: ElmanDef, small, states, xs, rprojs):
  del small, states
  return (base.ACTIVATIONS[cell.activation](xs[0] + rprojs[0]),)


_POINTWISE: dict[type, Callable] = {LSTMDef: _lstm_pointwise, GRUDef: _gru_pointwise,
                                    ElmanDef: _elman_pointwise}


def program_for(cell: base.CellDef) -> Program:
  """The kernel program of `cell`; ValueError for cells the kernels do not cover."""
  if isinstance(cell, LSTMDef):
    spec = cell.spec
    g = len(spec.gate_names)
    terms = tuple((1, k) for k in range(g))
    if spec.full_gate_recurrence:  # gate state s feeds σ gate t (gate index 1 + t)
      s = len(spec.sigmoid_gates)
      terms += tuple((2 + src, 1 + tgt) for tgt in range(s) for src in range(s))
    return Program(cell, g, terms, output_state=1, separable=not cell.proj_size, same_grads=True)
  if isinstance(cell, GRUDef):
    if cell.reset_after:
      return Program(cell, 3, ((0, 0), (0, 1), (0, 2)), 0, separable=True, same_grads=False)
    return Program(cell, 3, ((0, 0), (0, 1)), 0, separable=False, same_grads=True)
  if isinstance(cell, ElmanDef):
    return Program(cell, 1, ((0, 0),), 0, separable=True, same_grads=True)
  raise ValueError(f"cell must be an LSTMDef, GRUDef or ElmanDef for the Pallas kernels, "
                   f"got {type(cell).__name__}")
