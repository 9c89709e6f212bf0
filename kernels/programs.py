"""Cells rewritten for the kernels: gate-major layouts and the pointwise math on per-gate blocks.

A kernel never slices a value along its lanes (Triton cannot, Mosaic only at tile boundaries),
so every cell is re-expressed on separate [B, N] blocks:

    states  : the carry as a tuple of f32 state vectors [B, w] (LSTM: c, h[, gate_1..gate_S])
    xs      : the input projection (biases folded in) as one [B, N] block per gate
    terms   : the recurrent matmuls, one weight per (source state, target gate):
              [w_src, N], or with head-wise recurrence [heads, d, d] (the diagonal blocks only);
              rprojs[gate] = Σ states[src] @ weight over the gate's terms
    small   : what the pointwise math reads besides (peepholes, GRU's c_n, the layer-norm gains
              [1, N]; LSTMP's P [N, Ny], Cho-GRU's R_n [N, N]), named by `small_names`

`pack` turns library params into these arrays (padding batch and hidden to the kernel's tile);
`unpack` turns the kernel's state sequences back into the library's (final carry, ys). Both
are plain differentiable jnp, so gradients reach the library params through them.

Head-wise recurrence (`cell.num_heads` > 1) of a column-separable cell makes every head an
independent recurrence over its own columns: the hidden axis is laid out head by head, each
head padded to its own tile ([heads·d_p]), and the kernels run one program per head holding
only that head's [d_p, d_p] blocks. Cells whose gate math mixes columns (layer norm, the Cho
GRU's R_n) get the blocks packed into a dense block-diagonal weight instead.

Per-step options (see `step`): resets choose the initial state as the state entering a step;
the recurrent dropout mask multiplies h where it enters the recurrent matmuls; zoneout mixes
the entering state back into the new one; lengths freeze rows past their end.

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
LN_EPS = 1e-5


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

  num_gates: G, the [B, N] blocks of the input projection.
  terms: ((source state, target gate), ...), one recurrent weight each, in `Packed.weights` order.
  output_state: the state that is the cell's output y (and the carry's h).
  separable: the pointwise math acts column by column, so a kernel may tile the hidden axis.
  same_grads: d rprojs[gate] == d xs[gate] for every term's gate (the projection and the
    input only meet in a sum), so the backward kernel need not write d rprojs.
  heads: independent head recurrences the kernels run as separate programs (1: dense R).
  """
  cell: base.CellDef
  num_gates: int
  terms: tuple
  output_state: int
  separable: bool
  same_grads: bool
  heads: int = 1

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
    cell = self.cell
    if isinstance(cell, LSTMDef):
      spec = cell.spec
      names = [f"p_{g}" for g in spec.sigmoid_gates] if spec.peepholes else []
      if cell.layer_norm:
        names += [f"ln_h_{g}" for g in spec.gate_names] + ["ln_c", "ln_c_bias"]
      return tuple(names + (["P"] if cell.proj_size else []))
    if isinstance(cell, GRUDef):
      names = ["c_n"] if cell.reset_after else ["R_n"]
      return tuple(names + ([f"ln_h_{g}" for g in "run"] if cell.layer_norm else []))
    return ()

  # -- library <-> kernel layouts ---------------------------------------------------------
  def pack(self, params, xp, carry0, padded_b: int, padded_n: int, padded_ny: int) -> Packed:
    """params, xp [T, B, G·N] (the cell's input projection), carry0 -> kernel arrays, batch
    padded to `padded_b`, hidden to `padded_n` (heads: equal groups), output to `padded_ny`."""
    cell, n = self.cell, self.cell.hidden_size
    layout = self.layout(padded_n, padded_ny)
    xp = xp + params["b"]
    if isinstance(cell, GRUDef) and cell.reset_after:  # c_r, c_u only add to the pre-activation
      xp = xp + jnp.concatenate([params["c"][:2 * n], jnp.zeros((n,), params["c"].dtype)])
    t, b, _ = xp.shape
    xp = jnp.transpose(layout.hidden(xp.reshape(t, b, self.num_gates, n)), (0, 2, 1, 3))
    xp = pad_to(xp, (t, self.num_gates, padded_b, layout.padded_n))
    states0 = self._pack_states(layout, self._carry_states(carry0), padded_b)
    return Packed(xp, states0, self._pack_weights(layout, params), self._pack_small(layout, params))

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
    widths = self.state_widths(n, out)
    finals = [layout.unlanes(f[:batch], w) for f, w in zip(finals, widths)]
    cast = lambda a: a.astype(dtype)
    if isinstance(cell, LSTMDef):
      gates = None
      if cell.spec.full_gate_recurrence:
        gates = cast(jnp.concatenate(finals[2:], axis=-1))
      return LSTMCarry(cast(finals[0]), cast(finals[1]), gates), cast(h)
    return cast(finals[0]), cast(h)

  def _carry_states(self, carry):
    if isinstance(self.cell, LSTMDef):
      n = self.cell.hidden_size
      gates = column_blocks(carry.gates, len(self.cell.spec.sigmoid_gates), n) \
          if self.cell.spec.full_gate_recurrence else []
      return (carry.c, carry.h, *gates)
    return (carry,)

  def _dense_r(self, r, gates: int):
    """R [N_src, G·N] as is, or head blocks [heads, d, G, d] as a dense block-diagonal
    [N, G·N] (for cells whose gate math mixes columns)."""
    h = self.cell.num_heads
    if h == 1:
      return r
    n = self.cell.hidden_size
    dense = jnp.einsum("kigj,kl->kiglj", r, jnp.eye(h, dtype=r.dtype))
    return dense.reshape(n, gates * n)

  def _pack_weights(self, layout: Layout, params):
    cell, n = self.cell, self.cell.hidden_size
    widths = self.state_widths(layout.padded_n, layout.padded_ny)
    if self.heads > 1:  # [heads, d, G, d] -> per gate [heads, d_p, d_p]
      r = params["R"]
      d = layout.block
      return tuple(pad_to(r[:, :, gate], (self.heads, d, d)) for _, gate in self.terms)
    if isinstance(cell, LSTMDef):
      weights = column_blocks(self._dense_r(params["R"], self.num_gates), self.num_gates, n)
      if cell.spec.full_gate_recurrence:
        s = len(cell.spec.sigmoid_gates)
        rows = [params["R_gates"][i * n:(i + 1) * n] for i in range(s)]
        weights += [column_blocks(rows[src], s, n)[tgt] for tgt in range(s) for src in range(s)]
    elif isinstance(cell, GRUDef):
      g = 3 if cell.reset_after else 2
      weights = column_blocks(self._dense_r(params["R"], g), g, n)
    else:
      weights = [self._dense_r(params["R"], 1)]
    return tuple(pad_to(layout.hidden(w), (widths[src], layout.padded_n))
                 for w, (src, _) in zip(weights, self.terms))

  def _pack_small(self, layout: Layout, params):
    cell, n = self.cell, self.cell.hidden_size
    out = []
    for name in self.small_names:
      if name == "P":
        out.append(pad_to(params["P"], (layout.padded_n, layout.padded_ny)))
      elif name == "R_n":
        out.append(pad_to(params["R_n"], (layout.padded_n, layout.padded_n)))
      elif name == "c_n":
        out.append(layout.hidden(params["c"][None, 2 * n:]))
      elif name.startswith("ln_h_"):
        gates = cell.spec.gate_names if isinstance(cell, LSTMDef) else "run"
        k = gates.index(name[len("ln_h_"):])
        out.append(layout.hidden(params["ln_h"][None, k * n:(k + 1) * n]))
      else:  # peepholes, ln_c, ln_c_bias: [N]
        out.append(layout.hidden(params[name][None]))
    return tuple(out)

  # -- the math, on per-gate blocks (used by the kernels and the references) ---------------
  def pointwise(self, small, states, xs, rprojs):
    """One step's gate math: small, states [B, w] f32, xs [B, N] per gate, rprojs per gate
    ([B, N] or None) -> new states."""
    return _POINTWISE[type(self.cell)](self.cell, dict(zip(self.small_names, small)), states,
                                       xs, rprojs)

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

  def step(self, small, states, xs, rprojs, valid, keeps=None):
    """`pointwise`, then zoneout (keeps: per state None or the weight of the entering state,
    [B, w] or [1, w]), then lengths: where valid [B, 1] is False the states stay unchanged."""
    new = self.pointwise(small, states, xs, rprojs)
    if keeps is not None:
      new = tuple(a if k is None else k * b + (1 - k) * a for a, b, k in zip(new, states, keeps))
    if valid is None:
      return new
    return tuple(jnp.where(valid, a, b) for a, b in zip(new, states))

  def step_vjp(self, small, states, xs, rprojs, valid, d_new, keeps=None):
    """Cotangents of one step given its recurrent projections: -> (d_small, d_states (the
    direct part, without the recurrent matmuls' transposes), d_xs per gate, d_rprojs per gate
    (None where no term))."""
    present = tuple(r for r in rprojs if r is not None)

    def f(small, states, xs, present):
      it = iter(present)
      full = tuple(None if r is None else next(it) for r in rprojs)
      return self.step(small, states, xs, full, valid, keeps)

    _, vjp = jax.vjp(f, small, states, xs, present)
    d_small, d_states, d_xs, d_present = vjp(tuple(d_new))
    it = iter(d_present)
    return d_small, d_states, d_xs, tuple(None if r is None else next(it) for r in rprojs)

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


# -- pointwise functions per family ----------------------------------------------------------

def _layer_norm(a, gain, n: int):
  """Normalises a [B, Np] over its first n lanes (the rest are padding: zero in, zero out,
  as `gain` is zero there) and scales by gain [1, Np]."""
  mean = jnp.sum(a, axis=-1, keepdims=True) / n
  centred = a - mean
  if a.shape[-1] != n:
    lane = jax.lax.broadcasted_iota(jnp.int32, a.shape, a.ndim - 1)
    centred = jnp.where(lane < n, centred, 0)
  var = jnp.sum(centred * centred, axis=-1, keepdims=True) / n
  return centred * jax.lax.rsqrt(var + LN_EPS) * gain


def _recurrent(cell, small, name, r):
  """A gate's recurrent projection, layer-normalised for LN cells."""
  if r is None or not cell.layer_norm:
    return r
  return _layer_norm(r, small[f"ln_h_{name}"], cell.hidden_size)


def _lstm_pointwise(cell: LSTMDef, small, states, xs, rprojs):
  spec = cell.spec
  names = spec.gate_names
  pre = {}
  for k, name in enumerate(names):
    r = _recurrent(cell, small, name, rprojs[k])
    pre[name] = xs[k] if r is None else xs[k] + r
  c_prev = states[0]

  def gate(name, cell_state):
    if name not in pre:
      return None
    a = pre[name] + small[f"p_{name}"] * cell_state if spec.peepholes else pre[name]
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
  if cell.cell_clip is not None:
    c = jnp.clip(c, -cell.cell_clip, cell.cell_clip)
  o = gate("o", c)
  c_out = c
  if cell.layer_norm:
    c_out = _layer_norm(c, small["ln_c"], cell.hidden_size) + small["ln_c_bias"]
  y = base.ACTIVATIONS[spec.output_activation](c_out)
  if o is not None:
    y = y * o
  if cell.proj_size:  # in f32: Triton needs equal operand dtypes in this dot's transposes
    y = jnp.dot(y, small["P"].astype(f32), preferred_element_type=f32)
  if not spec.full_gate_recurrence:
    return c, y
  present = {"i": i, "f": f, "o": o}
  return (c, y, *[present[g] for g in spec.sigmoid_gates])


def _gru_pointwise(cell: GRUDef, small, states, xs, rprojs):
  (h,) = states
  r = base.sigmoid(xs[0] + _recurrent(cell, small, "r", rprojs[0]))
  u = base.sigmoid(xs[1] + _recurrent(cell, small, "u", rprojs[1]))
  if cell.reset_after:
    cand = jnp.tanh(xs[2] + r * (_recurrent(cell, small, "n", rprojs[2]) + small["c_n"]))
  else:
    r_n = small["R_n"].astype(f32)  # f32, as LSTMP's projection
    rn = jnp.dot(r * h, r_n, preferred_element_type=f32)
    cand = jnp.tanh(xs[2] + _recurrent(cell, small, "n", rn))
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
    separable = not cell.proj_size and not cell.layer_norm
    return Program(cell, g, terms, output_state=1, separable=separable,
                   same_grads=not cell.layer_norm, heads=cell.num_heads if separable else 1)
  if isinstance(cell, GRUDef):
    ln = cell.layer_norm
    if cell.reset_after:
      return Program(cell, 3, ((0, 0), (0, 1), (0, 2)), 0, separable=not ln, same_grads=False,
                     heads=1 if ln else cell.num_heads)
    return Program(cell, 3, ((0, 0), (0, 1)), 0, separable=False, same_grads=not ln)
  if isinstance(cell, ElmanDef):
    return Program(cell, 1, ((0, 0),), 0, separable=True, same_grads=True, heads=cell.num_heads)
  raise ValueError(f"cell must be an LSTMDef, GRUDef or ElmanDef for the Pallas kernels, "
                   f"got {type(cell).__name__}")
