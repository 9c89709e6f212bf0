"""The three architectures found by Jozefowicz, Zaremba & Sutskever (2015), "An Empirical
Exploration of Recurrent Network Architectures", in their notation:

MUT1:  z = σ(W_xz x + b_z)
       r = σ(W_xr x + W_hr h⁻ + b_r)
       h = tanh(W_hh (r ⊙ h⁻) + tanh(x) + b_h) ⊙ z + h⁻ ⊙ (1 − z)
MUT2:  z = σ(W_xz x + W_hz h⁻ + b_z)
       r = σ(x + W_hr h⁻ + b_r)
       h = tanh(W_hh (r ⊙ h⁻) + W_xh x + b_h) ⊙ z + h⁻ ⊙ (1 − z)
MUT3:  z = σ(W_xz x + W_hz tanh(h⁻) + b_z)
       r = σ(W_xr x + W_hr h⁻ + b_r)
       h = tanh(W_hh (r ⊙ h⁻) + W_xh x + b_h) ⊙ z + h⁻ ⊙ (1 − z)

MUT1 and MUT2 add x itself to an N-vector, so they need in_features == hidden_size.
Storage (x W with W [D, ·], the paper's W_x· transposed; b [3N] for z, r, h):
MUT1: W [D, 2N] (z, r), R [N, N] (W_hr), R_h [N, N] (W_hh).
MUT2: W [D, 2N] (z, h), R [N, 2N] (W_hz, W_hr), R_h.
MUT3: W [D, 3N] (z, r, h), R_z [N, N] (W_hz, reads tanh(h)), R [N, N] (W_hr), R_h.
R is the recurrent weight; R_h and R_z act inside the gate math (R_z reads tanh(h), which no
recurrent matmul does), so recurrent dropout does not reach them.
"""
import dataclasses

import jax.numpy as jnp

from rnn_research.cells import base

VARIANTS = ("MUT1", "MUT2", "MUT3")


@dataclasses.dataclass(frozen=True)
class MUTDef(base.CellDef):
  variant: str = "MUT1"
  input_params = ("W", "b")  # its input terms are not linear in x (tanh(x), x itself)

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
    if self.variant in ("MUT1", "MUT2") and self.in_features != self.hidden_size:
      raise ValueError(f"{self.variant} adds x to an N-vector, so in_features must equal "
                       f"hidden_size={self.hidden_size}, got {self.in_features}")

  @property
  def recurrent_weights(self):
    return ("R",)

  def param_inits(self):
    n, d = self.hidden_size, self.in_features
    w_width = 3 * n if self.variant == "MUT3" else 2 * n
    inits = {"W": ((d, w_width), base.lecun_normal), "b": ((3 * n,), base.zeros),
             "R": ((n, 2 * n if self.variant == "MUT2" else n), base.orthogonal),
             "R_h": ((n, n), base.orthogonal)}
    if self.variant == "MUT3":
      inits["R_z"] = ((n, n), base.orthogonal)
    return inits

  def input_projection(self, params, x):
    """-> [..., 3N]: the input terms of z, r and the candidate, biases included."""
    xw = x @ params["W"]
    n = self.hidden_size
    if self.variant == "MUT1":
      xw = jnp.concatenate([xw, jnp.tanh(x)], axis=-1)
    elif self.variant == "MUT2":
      xw = jnp.concatenate([xw[..., :n], x, xw[..., n:]], axis=-1)
    return xw + params["b"]

  # -- the gate math on per-gate blocks: gates z, r and the candidate h; one state h -------
  num_gates = 3

  @property
  def recurrent_blocks(self):
    """R feeds r (and, in MUT2, z)."""
    return (((0,), (0, 1) if self.variant == "MUT2" else (1,)),)

  def block_xs(self, params, xp):
    return xp  # the input projection holds the biases

  @property
  def small_names(self):
    return ("R_z", "R_h") if self.variant == "MUT3" else ("R_h",)

  def small_params(self, params):
    return {name: params[name] for name in self.small_names}

  @property
  def separable(self):
    return False

  def block_pointwise(self, small, states, xs, rprojs):
    (h,) = states
    matmul = lambda a, name: jnp.dot(a, small[name].astype(a.dtype))
    xz = base.plus(xs[0], rprojs[0])
    if self.variant == "MUT3":
      xz = xz + matmul(jnp.tanh(h), "R_z")
    z, r = base.sigmoid(xz), base.sigmoid(base.plus(xs[1], rprojs[1]))
    cand = jnp.tanh(matmul(r * h, "R_h") + xs[2])
    return (cand * z + h * (1 - z),)
