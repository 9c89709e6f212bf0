"""The Elman (simple) RNN with PyTorch `nn.RNN` semantics:

    h = act(W x + b + R h⁻),     act = tanh or relu

W [D, N], b [N], R [N, N]. PyTorch's two biases b_ih + b_hh are one sum here; they import as such.
With num_heads = K > 1, the recurrence is head-wise (`cells.heads`): R [K, N/K, 1, N/K].
"""
import dataclasses

from rnn_research.cells import base, heads


@dataclasses.dataclass(frozen=True)
class ElmanDef(base.CellDef):
  activation: str = "tanh"
  num_heads: int = 1

  def __post_init__(self):
    super().__post_init__()
    heads.check_num_heads(self.num_heads, self.hidden_size)
    if self.activation not in ("tanh", "relu"):
      raise ValueError(f"activation must be 'tanh' or 'relu', got {self.activation!r}")

  @property
  def recurrent_weights(self):
    return ("R",)

  def param_inits(self):
    n = self.hidden_size
    return {"W": ((self.in_features, n), base.lecun_normal), "b": ((n,), base.zeros),
            "R": (heads.weight_shape(n, 1, self.num_heads), heads.orthogonal)}

  def block_pointwise(self, small, states, xs, rprojs):
    return (base.ACTIVATIONS[self.activation](base.plus(xs[0], rprojs[0])),)
