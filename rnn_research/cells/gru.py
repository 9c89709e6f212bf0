"""The gated recurrent unit in both conventions (N = hidden_size, σ the logistic sigmoid).

reset_after=True, cuDNN/PyTorch (`linear_before_reset`): the reset gate scales the recurrent
matmul's output, so all three recurrent matmuls are one:

    r = σ(W_r x + b_r + R_r h⁻ + c_r)
    u = σ(W_u x + b_u + R_u h⁻ + c_u)                      update gate (PyTorch's z)
    n = tanh(W_n x + b_n + r ⊙ (R_n h⁻ + c_n))
    h = (1 − u) ⊙ n + u ⊙ h⁻

reset_after=False, Cho et al. 2014: the reset gate scales h before its matmul,

    n = tanh(W_n x + b_n + R_n (r ⊙ h⁻))                  (r, u as above without c)

Storage, gates in PyTorch's order r, u, n: W [D, 3N], b [3N] (PyTorch's b_ih);
reset_after: R [N, 3N], c [3N] (b_hh);  Cho: R [N, 2N] (r, u) and R_n [N, N].

Options (off by default):
  layer_norm (Ba et al. 2016): the input and recurrent parts of every gate block are normalised
    separately over the hidden axis (eps 1e-5), with gains ln_x, ln_h [3N] (init 1):
      r = σ(LN(W_r x)·gx_r + b_r + LN(R_r h⁻)·gh_r + c_r), u likewise,
      n = tanh(LN(W_n x)·gx_n + b_n + r ⊙ (LN(R_n h⁻)·gh_n + c_n))          reset_after
      n = tanh(LN(W_n x)·gx_n + b_n + LN(R_n (r ⊙ h⁻))·gh_n)                 Cho
  num_heads = K > 1: head-wise recurrence (`cells.heads`) of R, [K, N/K, G, N/K] with G = 3
    (reset_after) or 2 (Cho: r, u); the Cho GRU's R_n, inside the gate math, stays dense.
"""
import dataclasses

import jax
import jax.numpy as jnp

from rnn_research.cells import base, heads


@dataclasses.dataclass(frozen=True)
class GRUDef(base.CellDef):
  reset_after: bool = True
  layer_norm: bool = False
  num_heads: int = 1

  def __post_init__(self):
    super().__post_init__()
    heads.check_num_heads(self.num_heads, self.hidden_size)
    if not isinstance(self.layer_norm, bool):
      raise ValueError(f"layer_norm must be a bool, got {self.layer_norm!r}")

  @property
  def input_params(self) -> tuple[str, ...]:
    return ("W", "ln_x") if self.layer_norm else ("W",)

  @property
  def recurrent_weights(self):
    return ("R",)

  def param_inits(self):
    n, d = self.hidden_size, self.in_features
    inits = {"W": ((d, 3 * n), base.lecun_normal), "b": ((3 * n,), base.zeros)}
    r_gates = 3 if self.reset_after else 2
    r_shape = heads.weight_shape(n, r_gates, self.num_heads)
    if self.reset_after:
      inits.update(R=(r_shape, heads.orthogonal), c=((3 * n,), base.zeros))
    else:
      inits.update(R=(r_shape, heads.orthogonal), R_n=((n, n), base.orthogonal))
    if self.layer_norm:
      ones = jax.nn.initializers.ones
      inits.update(ln_x=((3 * n,), ones), ln_h=((3 * n,), ones))
    return inits

  def input_projection(self, params, x):
    xw = x @ params["W"]
    return base.layer_norm(xw, 3) * params["ln_x"] if self.layer_norm else xw

  # -- the gate math on per-gate blocks: gates r, u, n; one state h ----------------------
  num_gates = 3

  @property
  def recurrent_blocks(self):
    """R feeds r, u and (reset_after) n; the Cho GRU's R_n sits inside the gate math."""
    return (((0,), (0, 1, 2) if self.reset_after else (0, 1)),)

  def block_xs(self, params, xp):
    """xp + b, and c_r, c_u of reset_after (c_n stays in the reset product)."""
    xp = xp + params["b"]
    if not self.reset_after:
      return xp
    c = params["c"]
    return xp + jnp.concatenate([c[:2 * self.hidden_size],
                                 jnp.zeros((self.hidden_size,), c.dtype)])

  @property
  def small_names(self):
    return (("c_n",) if self.reset_after else ("R_n",)) + (
        tuple(f"ln_h_{g}" for g in "run") if self.layer_norm else ())

  def small_params(self, params):
    n = self.hidden_size
    small = {"c_n": params["c"][2 * n:]} if self.reset_after else {"R_n": params["R_n"]}
    if self.layer_norm:
      small.update({f"ln_h_{g}": params["ln_h"][k * n:(k + 1) * n] for k, g in enumerate("run")})
    return small

  @property
  def separable(self):
    return self.reset_after and not self.layer_norm

  @property
  def same_grads(self):
    return not self.reset_after and not self.layer_norm

  @property
  def inner_matrix(self):
    return "R_n" if not self.reset_after and not self.layer_norm else None

  def _gate(self, small, xs, rprojs, k, name):
    rproj = rprojs[k]
    return base.sigmoid(xs[k] if rproj is None else xs[k] + self._norm(small, rproj, name))

  def _norm(self, small, a, name):
    if not self.layer_norm:
      return a
    return base.block_layer_norm(a, small[f"ln_h_{name}"], self.hidden_size)

  def block_inner_input(self, small, states, xs, rprojs):
    """Cho: r ⊙ h⁻, what R_n multiplies."""
    return self._gate(small, xs, rprojs, 0, "r") * states[0]

  def block_pointwise(self, small, states, xs, rprojs):
    inner = None
    if not self.reset_after:
      rh = self.block_inner_input(small, states, xs, rprojs)
      inner = jnp.dot(rh, small["R_n"].astype(rh.dtype))
    return self.block_pointwise_inner(small, states, xs, rprojs, inner)

  def block_pointwise_inner(self, small, states, xs, rprojs, inner):
    (h,) = states
    u = self._gate(small, xs, rprojs, 1, "u")
    if self.reset_after:
      r = self._gate(small, xs, rprojs, 0, "r")
      cand = jnp.tanh(xs[2] + r * (self._norm(small, rprojs[2], "n") + small["c_n"]))
    else:
      cand = jnp.tanh(xs[2] + self._norm(small, inner, "n"))
    return ((1 - u) * cand + u * h,)
