"""The LSTM family of "LSTM: A Search Space Odyssey" (Greff et al., 2017) as one spec.

The vanilla LSTM `V`, per block (N = hidden_size, ⊙ elementwise, σ the logistic sigmoid):

    z = g(W_z x + R_z y⁻ + b_z)                         block input
    i = σ(W_i x + R_i y⁻ + p_i ⊙ c⁻ + b_i)              input gate  (peephole reads c(t-1))
    f = σ(W_f x + R_f y⁻ + p_f ⊙ c⁻ + b_f)              forget gate (peephole reads c(t-1))
    c = z ⊙ i + c⁻ ⊙ f                                  cell
    o = σ(W_o x + R_o y⁻ + p_o ⊙ c + b_o)               output gate (peephole reads the new c)
    y = h(c) ⊙ o                                        block output, g = h = tanh

and its variants: NIG (i = 1), NFG (f = 1), NOG (o = 1), NIAF (g = identity), NOAF (h = identity),
NP (no peepholes), CIFG (f = 1 − i, no forget-gate parameters), FGR (the previous step's gate
activations feed every gate: ī += R_ii i⁻ + R_fi f⁻ + R_oi o⁻, likewise f̄ and ō, nine extra
N×N matrices). `classic` is the PyTorch/Keras LSTM: NP. With `proj_size` = P > 0 (LSTMP, as
PyTorch's `proj_size`), y = (h(c) ⊙ o) P with P [N, P], and y is what recurs.

Storage (gates fused in the order z, i, f, o, absent gates left out, so one matmul serves all):
    W [D, G·N], b [G·N], R [Ny, G·N] (Ny = P or N), p_i/p_f/p_o [N],
    R_gates [S·N, S·N] (FGR; S = number of sigmoid gates), P [N, P] (LSTMP).
`to_paper`/`from_paper` convert to and from the paper's names (W_z [N, D], R_z [N, Ny], ...).

Options of LSTMDef (all off by default, which is the spec's model above exactly; the spec
itself defaults to DEFAULT_VARIANT, "NP"):
  cell_clip: c is clipped to [−cell_clip, cell_clip] right after it is computed, before the
    output gate's peephole and the output activation read it.
  layer_norm (Ba et al. 2016; the presets "LN-<variant>", e.g. "LN-NP", "LN-V"): each gate's
    pre-activation normalises its input and recurrent parts separately, per gate block over
    the hidden axis (eps 1e-5),  ā_g = LN(W_g x)·gx_g + LN(R_g y⁻)·gh_g + b_g  (+ peephole terms,
    added after normalisation), and y = o ⊙ h(LN(c)·gc + bc). Params ln_x, ln_h [G·N] (gx, gh),
    ln_c, ln_c_bias [N] (gc, bc). Not with proj_size or FGR.
  num_heads = K > 1: head-wise recurrence (`cells.heads`), R [K, N/K, G, N/K]. Not with
    proj_size or FGR.
"""
import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnn_research.cells import base, heads

FORGET_GATE_KINDS = ("gate", "none", "coupled")


@dataclasses.dataclass(frozen=True)
class LSTMSpec:
  """Which parts of the Odyssey LSTM block are present.

  forget_gate: "gate" (σ gate), "none" (NFG: f = 1) or "coupled" (CIFG: f = 1 − i).
  """
  input_gate: bool = True
  forget_gate: str = "gate"
  output_gate: bool = True
  peepholes: bool = True
  full_gate_recurrence: bool = False
  input_activation: str = "tanh"
  output_activation: str = "tanh"

  def __post_init__(self):
    if self.forget_gate not in FORGET_GATE_KINDS:
      raise ValueError(f"forget_gate must be one of {FORGET_GATE_KINDS}, got {self.forget_gate!r}")
    if self.forget_gate == "coupled" and not self.input_gate:
      raise ValueError("forget_gate='coupled' (f = 1 - i) needs input_gate=True")
    base.activation(self.input_activation, "input_activation")
    base.activation(self.output_activation, "output_activation")

  @property
  def sigmoid_gates(self) -> tuple[str, ...]:
    """The σ gates with their own parameters, in storage order."""
    present = {"i": self.input_gate, "f": self.forget_gate == "gate", "o": self.output_gate}
    return tuple(name for name, on in present.items() if on)

  @property
  def gate_names(self) -> tuple[str, ...]:
    return ("z", *self.sigmoid_gates)


PRESETS: dict[str, LSTMSpec] = {
    "V": LSTMSpec(),
    "NIG": LSTMSpec(input_gate=False),
    "NFG": LSTMSpec(forget_gate="none"),
    "NOG": LSTMSpec(output_gate=False),
    "NIAF": LSTMSpec(input_activation="identity"),
    "NOAF": LSTMSpec(output_activation="identity"),
    "NP": LSTMSpec(peepholes=False),
    "CIFG": LSTMSpec(forget_gate="coupled"),
    "FGR": LSTMSpec(full_gate_recurrence=True),
    "classic": LSTMSpec(peepholes=False),
}

# The variant of an LSTM built without one (LSTMDef, lstm_def, LSTMCell, layers.LSTM): "NP", the
# LSTM of PyTorch, Keras, Flax and cuDNN, so that a model written for them means the same here
# and their weights import (`load_torch_state_dict`); the Odyssey study names its variants.
DEFAULT_VARIANT = "NP"

# Layer-normalised presets: "LN-<name>" is PRESETS[name] with layer_norm=True (FGR excepted).
LAYER_NORM_PRESETS: dict[str, str] = {f"LN-{name}": name for name in PRESETS if name != "FGR"}


def lstm_spec(variant: "str | LSTMSpec") -> LSTMSpec:
  """A preset by name (see PRESETS), or a spec passed through."""
  return lstm_variant(variant)[0]


def lstm_def(in_features: int, hidden_size: int, variant: "str | LSTMSpec" = DEFAULT_VARIANT,
             **fields) -> "LSTMDef":
  """The LSTMDef of a preset of PRESETS or LAYER_NORM_PRESETS (default DEFAULT_VARIANT, "NP"),
  or of a spec; `fields` are LSTMDef's others (proj_size, forget_bias, cell_clip, num_heads,
  layer_norm: True normalises any variant, as its "LN-" preset does)."""
  spec, layer_norm = lstm_variant(variant)
  layer_norm = fields.pop("layer_norm", False) or layer_norm
  return LSTMDef(in_features, hidden_size, spec, layer_norm=layer_norm, **fields)


def lstm_variant(variant: "str | LSTMSpec") -> tuple[LSTMSpec, bool]:
  """(spec, layer_norm) of a preset of PRESETS or LAYER_NORM_PRESETS, or of a spec."""
  if isinstance(variant, LSTMSpec):
    return variant, False
  if variant in LAYER_NORM_PRESETS:
    return PRESETS[LAYER_NORM_PRESETS[variant]], True
  if variant not in PRESETS:
    raise ValueError(f"variant must be one of {sorted(PRESETS) + sorted(LAYER_NORM_PRESETS)} "
                     f"or an LSTMSpec, got {variant!r}")
  return PRESETS[variant], False


class LSTMCarry(NamedTuple):
  """c [B, N]; h [B, Ny] (the output y that recurs); gates [B, S·N] for FGR, else None."""
  c: jax.Array
  h: jax.Array
  gates: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class LSTMDef(base.CellDef):
  """An LSTM of the Odyssey family; `spec` defaults to DEFAULT_VARIANT's ("NP": no peepholes,
  the LSTM of PyTorch, Keras, Flax and cuDNN). `forget_bias` initialises b_f (for CIFG, b_i to
  −forget_bias, which starts f = 1 − i at the same value). cell_clip, layer_norm, num_heads: see
  the module docstring."""
  spec: LSTMSpec = PRESETS[DEFAULT_VARIANT]
  proj_size: int = 0
  forget_bias: float = 1.0
  cell_clip: float | None = None
  layer_norm: bool = False
  num_heads: int = 1

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.spec, LSTMSpec):
      raise ValueError(f"spec must be an LSTMSpec, got {self.spec!r}")
    if not isinstance(self.proj_size, int) or not 0 <= self.proj_size < self.hidden_size:
      raise ValueError(
          f"proj_size must be 0 (no projection) or in [1, hidden_size={self.hidden_size}), "
          f"got {self.proj_size!r}")
    base.check_cell_clip(self.cell_clip)
    heads.check_num_heads(self.num_heads, self.hidden_size)
    if not isinstance(self.layer_norm, bool):
      raise ValueError(f"layer_norm must be a bool, got {self.layer_norm!r}")
    for option, on in (("layer_norm=True", self.layer_norm), (f"num_heads={self.num_heads}",
                                                              self.num_heads > 1)):
      if on and self.proj_size:
        raise ValueError(f"{option} is not supported with proj_size > 0 (LSTMP)")
      if on and self.spec.full_gate_recurrence:
        raise ValueError(f"{option} is not supported with full_gate_recurrence (FGR)")

  @property
  def input_params(self) -> tuple[str, ...]:
    return ("W", "ln_x") if self.layer_norm else ("W",)

  @property
  def output_size(self) -> int:
    return self.proj_size or self.hidden_size

  @property
  def recurrent_weights(self) -> tuple[str, ...]:
    return ("R", "R_gates") if self.spec.full_gate_recurrence else ("R",)

  def _bias_init(self):
    names, n = self.spec.gate_names, self.hidden_size
    target = {"gate": "f", "coupled": "i"}.get(self.spec.forget_gate)
    value = -self.forget_bias if self.spec.forget_gate == "coupled" else self.forget_bias

    def init(key, shape, dtype):
      del key
      b = jnp.zeros(shape, dtype)
      if target is None:
        return b
      k = names.index(target)
      return b.at[k * n:(k + 1) * n].set(value)
    return init

  def param_inits(self):
    spec, n, d = self.spec, self.hidden_size, self.in_features
    width = len(spec.gate_names) * n
    inits = {
        "W": ((d, width), base.lecun_normal),
        "b": ((width,), self._bias_init()),
        "R": ((self.output_size, width), base.orthogonal),
    }
    if self.num_heads > 1:
      inits["R"] = (heads.weight_shape(n, len(spec.gate_names), self.num_heads), heads.orthogonal)
    if spec.peepholes:
      for gate in spec.sigmoid_gates:
        inits[f"p_{gate}"] = ((n,), base.uniform(1 / math.sqrt(n)))
    if spec.full_gate_recurrence:
      s = len(spec.sigmoid_gates) * n
      inits["R_gates"] = ((s, s), base.orthogonal)
    if self.proj_size:
      inits["P"] = ((n, self.proj_size), base.lecun_normal)
    if self.layer_norm:
      ones = jax.nn.initializers.ones
      inits.update(ln_x=((width,), ones), ln_h=((width,), ones), ln_c=((n,), ones),
                   ln_c_bias=((n,), base.zeros))
    return inits

  def input_projection(self, params, x):
    xw = x @ params["W"]
    if self.layer_norm:
      return base.layer_norm(xw, len(self.spec.gate_names)) * params["ln_x"]
    return xw

  @property
  def zoneout_widths(self):
    """(c, h): zoneout acts on the cell and on the recurrent output separately."""
    return (self.hidden_size, self.output_size)

  def zoneout(self, previous: LSTMCarry, new: LSTMCarry, keep):
    """keep = (keep_c, keep_h), each None or broadcastable to [B, width]; the zoned h is y."""
    keep_c, keep_h = keep
    h = base.mix(keep_h, previous.h, new.h)
    return LSTMCarry(base.mix(keep_c, previous.c, new.c), h, new.gates), h

  def initial_carry(self, batch_shape, dtype=jnp.float32) -> LSTMCarry:
    gates = None
    if self.spec.full_gate_recurrence:
      gates = jnp.zeros((*batch_shape, len(self.spec.sigmoid_gates) * self.hidden_size), dtype)
    return LSTMCarry(jnp.zeros((*batch_shape, self.hidden_size), dtype),
                     jnp.zeros((*batch_shape, self.output_size), dtype), gates)

  # -- the gate math on per-gate blocks: states (c, y[, the σ gates for FGR]) ----------------
  @property
  def num_gates(self) -> int:
    return len(self.spec.gate_names)

  @property
  def output_state(self) -> int:
    return 1

  @property
  def recurrent_blocks(self):
    """R reads y and feeds every gate; FGR's R_gates reads the σ gates and feeds them."""
    blocks = (((1,), tuple(range(self.num_gates))),)
    if self.spec.full_gate_recurrence:
      s = len(self.spec.sigmoid_gates)
      blocks += ((tuple(range(2, 2 + s)), tuple(range(1, 1 + s))),)
    return blocks

  def state_widths(self, n, ny):
    return (n, ny) + (n,) * len(self.spec.sigmoid_gates) * self.spec.full_gate_recurrence

  def carry_states(self, carry: LSTMCarry):
    if not self.spec.full_gate_recurrence:
      return (carry.c, carry.h)
    return (carry.c, carry.h,
            *jnp.split(carry.gates, len(self.spec.sigmoid_gates), axis=-1))

  def carry_of(self, states) -> LSTMCarry:
    gates = jnp.concatenate(states[2:], axis=-1) if self.spec.full_gate_recurrence else None
    return LSTMCarry(states[0], states[1], gates)

  @property
  def small_names(self):
    spec = self.spec
    names = [f"p_{g}" for g in spec.sigmoid_gates] if spec.peepholes else []
    if self.layer_norm:
      names += [f"ln_h_{g}" for g in spec.gate_names] + ["ln_c", "ln_c_bias"]
    return tuple(names + (["P"] if self.proj_size else []))

  def small_params(self, params):
    n, gates = self.hidden_size, self.spec.gate_names
    small = {}
    for name in self.small_names:
      if name.startswith("ln_h_"):
        k = gates.index(name[len("ln_h_"):])
        small[name] = params["ln_h"][k * n:(k + 1) * n]
      else:  # P, peepholes, ln_c, ln_c_bias
        small[name] = params[name]
    return small

  @property
  def separable(self):
    return not self.proj_size and not self.layer_norm

  @property
  def same_grads(self):
    return not self.layer_norm

  def block_pointwise(self, small, states, xs, rprojs):
    spec, n = self.spec, self.hidden_size
    c_prev = states[0]
    pre = {}
    for k, name in enumerate(spec.gate_names):
      r = rprojs[k]
      if r is not None and self.layer_norm:
        r = base.block_layer_norm(r, small[f"ln_h_{name}"], n)
      pre[name] = base.plus(xs[k], r)

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
    if self.cell_clip is not None:
      c = jnp.clip(c, -self.cell_clip, self.cell_clip)
    o = gate("o", c)
    c_out = c
    if self.layer_norm:
      c_out = base.block_layer_norm(c, small["ln_c"], n) + small["ln_c_bias"]
    y = base.ACTIVATIONS[spec.output_activation](c_out)
    if o is not None:
      y = y * o
    if self.proj_size:  # in y's dtype: Triton needs equal operand dtypes in this dot's transposes
      y = jnp.dot(y, small["P"].astype(y.dtype))
    if not spec.full_gate_recurrence:
      return c, y
    present = {"i": i, "f": f, "o": o}
    return (c, y, *[present[g] for g in spec.sigmoid_gates])


# -- the paper's notation ------------------------------------------------------------------

def _fgr_names(spec: LSTMSpec) -> list[tuple[str, int, int]]:
  """[(paper name R_<source><target>, source index, target index)] over the σ gates."""
  gates = spec.sigmoid_gates
  return [(f"R_{src}{tgt}", s, t) for t, tgt in enumerate(gates) for s, src in enumerate(gates)]


def _check_paper(cell: LSTMDef) -> None:
  if cell.layer_norm or cell.num_heads > 1:
    raise ValueError("the paper's notation has no layer norm gains and dense R_* only: "
                     f"to_paper/from_paper need layer_norm=False and num_heads=1, got "
                     f"layer_norm={cell.layer_norm}, num_heads={cell.num_heads}")


def paper_names(cell: LSTMDef) -> list[str]:
  """The names `to_paper` returns for this cell."""
  _check_paper(cell)
  names = [f"{kind}_{g}" for g in cell.spec.gate_names for kind in ("W", "R", "b")]
  if cell.spec.peepholes:
    names += [f"p_{g}" for g in cell.spec.sigmoid_gates]
  if cell.spec.full_gate_recurrence:
    names += [name for name, _, _ in _fgr_names(cell.spec)]
  return names + (["P"] if cell.proj_size else [])


def to_paper(cell: LSTMDef, params: base.Params) -> dict[str, jax.Array]:
  """Greff et al.'s names: W_* [N, D], R_* [N, Ny], p_* [N], b_* [N]; FGR's R_<src><tgt>
  [N, N] (R_fi carries f(t-1) into the input gate); P [Ny, N] for LSTMP (PyTorch's weight_hr)."""
  _check_paper(cell)
  cell.check_params(params)
  n, gates = cell.hidden_size, cell.spec.gate_names
  blocks = lambda x: jnp.split(x, len(gates), axis=-1)
  paper = {}
  for g, w, r, b in zip(gates, blocks(params["W"]), blocks(params["R"]), blocks(params["b"])):
    paper[f"W_{g}"], paper[f"R_{g}"], paper[f"b_{g}"] = w.T, r.T, b
  if cell.spec.peepholes:
    paper.update({f"p_{g}": params[f"p_{g}"] for g in cell.spec.sigmoid_gates})
  if cell.spec.full_gate_recurrence:
    for name, s, t in _fgr_names(cell.spec):
      paper[name] = params["R_gates"][s * n:(s + 1) * n, t * n:(t + 1) * n].T
  if cell.proj_size:
    paper["P"] = params["P"].T
  return paper


def from_paper(cell: LSTMDef, paper: dict) -> base.Params:
  """Inverse of `to_paper`; raises ValueError naming a missing or extra entry."""
  expected = set(paper_names(cell))
  if set(paper) != expected:
    raise ValueError(f"paper parameters must be exactly {sorted(expected)}; "
                     f"missing {sorted(expected - set(paper))}, "
                     f"extra {sorted(set(paper) - expected)}")
  gates = cell.spec.gate_names
  paper = {k: jnp.asarray(v) for k, v in paper.items()}
  params = {
      "W": jnp.concatenate([paper[f"W_{g}"].T for g in gates], axis=-1),
      "R": jnp.concatenate([paper[f"R_{g}"].T for g in gates], axis=-1),
      "b": jnp.concatenate([paper[f"b_{g}"] for g in gates], axis=-1),
  }
  params.update({k: v for k, v in paper.items() if k.startswith("p_")})
  if cell.spec.full_gate_recurrence:
    s = len(cell.spec.sigmoid_gates)
    rows = [[None] * s for _ in range(s)]
    for name, src, tgt in _fgr_names(cell.spec):
      rows[src][tgt] = paper[name].T
    params["R_gates"] = jnp.block(rows)
  if cell.proj_size:
    params["P"] = paper["P"].T
  cell.check_params(params)
  return params
