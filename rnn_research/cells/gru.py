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
"""
import dataclasses

import jax.numpy as jnp

from rnn_research.cells import base


@dataclasses.dataclass(frozen=True)
class GRUDef(base.CellDef):
  reset_after: bool = True

  @property
  def recurrent_weights(self):
    return ("R",)

  def param_inits(self):
    n, d = self.hidden_size, self.in_features
    inits = {"W": ((d, 3 * n), base.lecun_normal), "b": ((3 * n,), base.zeros)}
    if self.reset_after:
      inits.update(R=((n, 3 * n), base.orthogonal), c=((3 * n,), base.zeros))
    else:
      inits.update(R=((n, 2 * n), base.orthogonal), R_n=((n, n), base.orthogonal))
    return inits

  def recurrent_inputs(self, h):
    return (h,)

  def pointwise(self, params, h, xp, rprojs):
    n = self.hidden_size
    xp = base.materialize(xp + params["b"])
    if self.reset_after:
      rh = base.materialize(rprojs[0] + params["c"])
      r, u = jnp.split(base.sigmoid(xp[..., :2 * n] + rh[..., :2 * n]), 2, axis=-1)
      cand = jnp.tanh(xp[..., 2 * n:] + r * rh[..., 2 * n:])
    else:
      r, u = jnp.split(base.sigmoid(xp[..., :2 * n] + rprojs[0]), 2, axis=-1)
      cand = jnp.tanh(xp[..., 2 * n:] + (r * h) @ params["R_n"])
    h = (1 - u) * cand + u * h
    return h, h
