"""NNX sequence layers with a PyTorch-like signature: stacks of any cell, bidirectional,
dropout between layers, variable lengths, carries in and out.

    model = LSTM(in_features=88, hidden_size=128, num_layers=2, variant="V", rngs=nnx.Rngs(0))
    ys, carries = model(xs, lengths=lengths)        # xs [B, T, 88] -> ys [B, T, 128]

`carries` has one entry per layer: the cell's carry, or (forward, backward) when bidirectional;
pass it back as `initial_carry` to continue a sequence (truncated BPTT).
"""
from typing import Callable

import jax.numpy as jnp
from flax import nnx

from rnn_research.cells import modules as cells
from rnn_research.layers import sequence


class StackedRNN(nnx.Module):
  """`num_layers` layers of cells made by `make_cell(in_features, rngs)`.

  Args:
    make_cell: builds one layer's cell module for a given input size.
    in_features: D of the inputs.
    num_layers: layers in the stack; layer k > 0 reads layer k-1's outputs.
    bidirectional: each layer runs forward and in reverse and concatenates the outputs.
    dropout: dropout rate on the outputs of every layer but the last (as PyTorch), in [0, 1).
    time_major: inputs and outputs are [T, B, ...] instead of [B, T, ...].
    unroll: time steps per scan iteration.
    backend: "scan", "pallas" (the Pallas kernels; interpreted on a CPU) or "auto" (the kernels
      on GPU/TPU where they support the cell, else the scan).
  """

  def __init__(self, make_cell: Callable[[int, nnx.Rngs], cells.CellModule], in_features: int,
               *, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
               time_major: bool = False, unroll: int = 1, backend: str = "scan",
               rngs: nnx.Rngs):
    if not isinstance(num_layers, int) or num_layers < 1:
      raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    sequence.check_backend(backend)
    self.num_layers, self.bidirectional = num_layers, bidirectional
    self.time_major, self.unroll, self.backend = time_major, unroll, backend
    directions = 2 if bidirectional else 1
    layers = []
    for _ in range(num_layers):
      layer = [make_cell(in_features, rngs) for _ in range(directions)]
      in_features = directions * layer[0].definition.output_size
      layers.append(nnx.List(layer))
    self.layers = nnx.List(layers)
    # Only stacks with dropout carry its random state.
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 and num_layers > 1 else None

  @property
  def output_size(self) -> int:
    return (2 if self.bidirectional else 1) * self.layers[-1][0].definition.output_size

  def __call__(self, xs, *, initial_carry=None, lengths=None):
    """xs [B, T, D] (or [T, B, D]) -> (ys [B, T, output_size], per-layer final carries)."""
    if initial_carry is not None and len(initial_carry) != self.num_layers:
      raise ValueError(f"initial_carry must hold one carry per layer ({self.num_layers}), "
                       f"got {len(initial_carry)}")
    options = dict(lengths=lengths, time_major=self.time_major, unroll=self.unroll,
                   backend=self.backend)
    finals = []
    for k, layer in enumerate(self.layers):
      if k > 0 and self.dropout is not None:
        xs = self.dropout(xs)
      carry = None if initial_carry is None else initial_carry[k]
      if self.bidirectional:
        forward, backward = layer
        xs, final = sequence.run_bidirectional(forward.definition, forward.params,
                                               backward.params, xs, initial_carry=carry,
                                               **options)
      else:
        xs, final = sequence.run(layer[0].definition, layer[0].params, xs, initial_carry=carry,
                                 **options)
      finals.append(final)
    return xs, tuple(finals)


class LSTM(StackedRNN):
  """A stack of LSTM layers. variant: a preset of `cells.lstm.PRESETS` ("NP" = PyTorch's LSTM,
  "V" = the Odyssey vanilla LSTM with peepholes, ...) or an LSTMSpec; proj_size > 0 is LSTMP."""

  def __init__(self, in_features: int, hidden_size: int, num_layers: int = 1,
               bidirectional: bool = False, dropout: float = 0.0, proj_size: int = 0,
               variant="NP", *, forget_bias: float = 1.0, param_dtype=jnp.float32,
               rngs: nnx.Rngs, **options):
    make = lambda d, r: cells.LSTMCell(d, hidden_size, variant=variant, proj_size=proj_size,
                                       forget_bias=forget_bias, param_dtype=param_dtype, rngs=r)
    super().__init__(make, in_features, num_layers=num_layers, bidirectional=bidirectional,
                     dropout=dropout, rngs=rngs, **options)


class GRU(StackedRNN):
  """A stack of GRU layers; reset_after=True is PyTorch's convention, False Cho et al.'s."""

  def __init__(self, in_features: int, hidden_size: int, num_layers: int = 1,
               bidirectional: bool = False, dropout: float = 0.0, *, reset_after: bool = True,
               param_dtype=jnp.float32, rngs: nnx.Rngs, **options):
    make = lambda d, r: cells.GRUCell(d, hidden_size, reset_after=reset_after,
                                      param_dtype=param_dtype, rngs=r)
    super().__init__(make, in_features, num_layers=num_layers, bidirectional=bidirectional,
                     dropout=dropout, rngs=rngs, **options)


class SimpleRNN(StackedRNN):
  """A stack of Elman layers (PyTorch's nn.RNN); nonlinearity "tanh" or "relu"."""

  def __init__(self, in_features: int, hidden_size: int, num_layers: int = 1,
               nonlinearity: str = "tanh", bidirectional: bool = False, dropout: float = 0.0,
               *, param_dtype=jnp.float32, rngs: nnx.Rngs, **options):
    make = lambda d, r: cells.ElmanCell(d, hidden_size, activation=nonlinearity,
                                        param_dtype=param_dtype, rngs=r)
    super().__init__(make, in_features, num_layers=num_layers, bidirectional=bidirectional,
                     dropout=dropout, rngs=rngs, **options)


def load_torch_state_dict(model: StackedRNN, state_dict) -> None:
  """Sets every weight of `model` from a PyTorch nn.LSTM / nn.GRU / nn.RNN state dict with the
  same sizes, num_layers and bidirectional."""
  from rnn_research.torch_weights import params_from_torch
  for k, layer in enumerate(model.layers):
    for direction, cell in enumerate(layer):
      cell.load_params(params_from_torch(cell.definition, state_dict, k, reverse=direction == 1))
