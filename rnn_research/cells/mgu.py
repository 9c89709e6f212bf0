"""The minimal gated unit (Zhou et al. 2016), one gate for both forgetting and resetting:

    f = σ(W_f x + b_f + R_f h⁻)
    n = tanh(W_n x + b_n + R_n (f ⊙ h⁻))
    h = (1 − f) ⊙ h⁻ + f ⊙ n

W [D, 2N] (f, n), b [2N], R [N, N] (R_f), R_n [N, N]. b_f starts at `forget_bias` (1.0, as
Flax's MGUCell), so f ≈ 0.73 at first.
"""
import dataclasses

import jax.numpy as jnp

from rnn_research.cells import base


@dataclasses.dataclass(frozen=True)
class MGUDef(base.CellDef):
  forget_bias: float = 1.0

  @property
  def recurrent_weights(self):
    return ("R",)

  def param_inits(self):
    n = self.hidden_size

    def bias_init(key, shape, dtype):
      return base.zeros(key, shape, dtype).at[:n].set(self.forget_bias)
    return {"W": ((self.in_features, 2 * n), base.lecun_normal), "b": ((2 * n,), bias_init),
            "R": ((n, n), base.orthogonal), "R_n": ((n, n), base.orthogonal)}

  # -- the gate math on per-gate blocks: gates f, n; R feeds f, R_n sits inside ------------
  num_gates = 2
  small_names = ("R_n",)

  def small_params(self, params):
    return {"R_n": params["R_n"]}

  @property
  def separable(self):
    return False

  def block_pointwise(self, small, states, xs, rprojs):
    (h,) = states
    f = base.sigmoid(base.plus(xs[0], rprojs[0]))
    fh = f * h
    cand = jnp.tanh(xs[1] + jnp.dot(fh, small["R_n"].astype(fh.dtype)))
    return ((1 - f) * h + f * cand,)
