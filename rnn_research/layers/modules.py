"""NNX sequence layers with a PyTorch-like signature: stacks of any cell, bidirectional,
dropout between layers, variable lengths, carries in and out.

    model = LSTM(in_features=88, hidden_size=128, num_layers=2, variant="V", rngs=nnx.Rngs(0))
    ys, carries = model(xs, lengths=lengths)        # xs [B, T, 88] -> ys [B, T, 128]

`carries` has one entry per layer: the cell's carry, or (forward, backward) when bidirectional;
pass it back as `initial_carry` to continue a sequence (truncated BPTT, `layers.tbptt`).

Regularisation (`layers.regularization`; masks drawn once per call, in training only):
    LSTM(88, 128, input_dropout=0.25, recurrent_dropout=0.25, weight_dropout=0.5,
         zoneout_c=0.5, zoneout_h=0.05, rngs=nnx.Rngs(0, dropout=1))
`model.eval()` turns the masks off (zoneout then takes its expected update); `model.train()`
turns them back on.
"""
import dataclasses
import warnings

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.cells import DEFAULT_VARIANT, CellDef, ElmanDef, GRUDef, LSTMDef, lstm_def
from rnn_research.cells import modules as cells
from rnn_research.layers import regularization, sequence
from rnn_research.layers.options import check_grad_clip, check_remat


class StackedRNN(nnx.Module):
  """`num_layers` layers of the cell `cell` defines.

  Args:
    cell: the first layer's cell definition (its in_features is D of the inputs); every later
      layer has the same with in_features the previous layer's output width.
    num_layers: layers in the stack; layer k > 0 reads layer k-1's outputs.
    bidirectional: each layer runs forward and in reverse and concatenates the outputs.
    dropout: dropout rate on the outputs of every layer but the last (as PyTorch), in [0, 1).
    input_dropout: variational dropout on every layer's inputs (one mask per sequence and
      feature, shared over time and by both directions), in [0, 1).
    recurrent_dropout: variational dropout on h where it enters the recurrent matmuls (one mask
      per sequence and direction, shared over time), in [0, 1).
    weight_dropout: DropConnect on the hidden-to-hidden matrices (one mask per call and
      direction), in [0, 1).
    zoneout_c, zoneout_h: zoneout rates of the LSTM's cell and of h, in [0, 1).
    remat: None, k or "sqrt": keep every k-th carry and recompute in the backward pass (the
      scan backend; the kernels keep only the state sequence anyway and ignore it).
    grad_clip: clip the carry's cotangent passed back each step to [-grad_clip, grad_clip].
    time_major: inputs and outputs are [T, B, ...] instead of [B, T, ...].
    unroll: time steps per scan iteration.
    backend: "scan", "pallas" (the Pallas kernels; interpreted on a CPU), "auto" (the kernels
      on GPU/TPU where they support the cell, else the scan) or "cudnn" (cuDNN's LSTM through
      jax.experimental.rnn on NVIDIA GPUs: the NP LSTM in float32, without recurrent dropout,
      zoneout or grad_clip; `layers.cudnn`).
    param_dtype: the parameters' dtype.
  """

  def __init__(self, cell: CellDef, *, num_layers: int = 1, bidirectional: bool = False,
               dropout: float = 0.0, input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
               weight_dropout: float = 0.0, zoneout_c: float = 0.0, zoneout_h: float = 0.0,
               remat=None, grad_clip: float | None = None, time_major: bool = False,
               unroll: int = 1, backend: str = "scan", param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    if not isinstance(num_layers, int) or num_layers < 1:
      raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    regularization.check_rate("dropout", dropout)
    rates = regularization.Rates(input_dropout, recurrent_dropout, weight_dropout, zoneout_c,
                                 zoneout_h)
    check_remat(remat)
    check_grad_clip(grad_clip)
    sequence.check_backend(backend)
    if backend == "cudnn":  # what cuDNN cannot run is refused here, before any call
      from rnn_research.layers import cudnn
      cudnn.check_cell(cell)
      cudnn.check_options(resets=False, recurrent_dropout=recurrent_dropout > 0,
                          zoneout=zoneout_c > 0 or zoneout_h > 0, grad_clip=grad_clip is not None)
    self.num_layers, self.bidirectional = num_layers, bidirectional
    self.time_major, self.unroll, self.backend = time_major, unroll, backend
    self.remat, self.grad_clip = remat, grad_clip
    directions = 2 if bidirectional else 1
    layers = []
    for _ in range(num_layers):
      layers.append(nnx.List([cells.CellModule(cell, param_dtype=param_dtype, rngs=rngs)
                              for _ in range(directions)]))
      cell = dataclasses.replace(cell, in_features=directions * cell.output_size)
    self.layers = nnx.List(layers)
    rates.check_cell(self.layers[0][0].definition)
    if dropout > 0 and num_layers == 1:  # as PyTorch, which warns too
      warnings.warn(f"dropout={dropout} acts between layers, so a one-layer stack has none; "
                    "use input_dropout or recurrent_dropout, or the model's output_dropout "
                    "(next-step models)", stacklevel=3)
    # Only stacks with dropout carry its random state.
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 and num_layers > 1 else None
    self.masks = regularization.RecurrentDropout(rates, rngs=rngs) if rates.any else None

  @property
  def output_size(self) -> int:
    return (2 if self.bidirectional else 1) * self.layers[-1][0].definition.output_size

  def __call__(self, xs, *, initial_carry=None, lengths=None, resets=None):
    """xs [B, T, D] (or [T, B, D]) -> (ys [B, T, output_size], per-layer final carries).

    lengths: optional int [B]. resets: optional bool [B, T] (or [T, B]); where set, every
    layer's carry restarts from its initial carry (packed sequences, episode boundaries)."""
    if initial_carry is not None and len(initial_carry) != self.num_layers:
      raise ValueError(f"initial_carry must hold one carry per layer ({self.num_layers}), "
                       f"got {len(initial_carry)}")
    options = dict(lengths=lengths, time_major=self.time_major, unroll=self.unroll,
                   backend=self.backend, resets=resets, remat=self.remat,
                   grad_clip=self.grad_clip)
    finals = []
    for k, layer in enumerate(self.layers):
      if k > 0 and self.dropout is not None:
        xs = self.dropout(xs)
      carry = None if initial_carry is None else initial_carry[k]
      params, masks = self._masked(layer, xs)
      xs = self._drop_inputs(xs)
      if self.bidirectional:
        xs, final = sequence.run_bidirectional(
            layer[0].definition, *params, xs, initial_carry=carry, options_forward=masks[0],
            options_backward=masks[1], **options)
      else:
        xs, final = sequence.run(layer[0].definition, params[0], xs, initial_carry=carry,
                                 **options, **masks[0])
      finals.append(final)
    return xs, tuple(finals)

  def _masked(self, layer, xs):
    """Each direction's params (DropConnect applied) and recurrence options (h_mask, zoneout)."""
    if self.masks is None:
      return [cell.params for cell in layer], [{} for _ in layer]
    num_steps, batch = xs.shape[:2] if self.time_major else xs.shape[1::-1]
    dtype = jnp.result_type(xs, *jax.tree.leaves(layer[0].params))
    drawn = [self.masks(cell.definition, cell.params, num_steps, batch, dtype) for cell in layer]
    return [params for params, _ in drawn], [options for _, options in drawn]

  def _drop_inputs(self, xs):
    """Input dropout: one mask [B, D] per call, shared over time and by both directions."""
    if self.masks is None:
      return xs
    batch, features = (xs.shape[1] if self.time_major else xs.shape[0]), xs.shape[-1]
    mask = self.masks.input_mask(batch, features, xs.dtype)
    if mask is None:
      return xs
    return xs * (mask[None] if self.time_major else mask[:, None])


def split_fields(definition_type, options: dict) -> tuple[dict, dict]:
  """(the options that are fields of the cell definition type, the others: the layer's)."""
  names = {field.name for field in dataclasses.fields(definition_type)}
  return ({k: v for k, v in options.items() if k in names},
          {k: v for k, v in options.items() if k not in names})


class LSTM(StackedRNN):
  """A stack of LSTM layers. variant: a preset of `cells.lstm.PRESETS` ("NP" = PyTorch's LSTM,
  "V" = the Odyssey vanilla LSTM with peepholes, ...), a layer-normalised preset "LN-NP",
  "LN-V", ... or an LSTMSpec. The other keyword arguments are LSTMDef's fields (proj_size > 0
  is LSTMP; forget_bias, cell_clip, num_heads) or StackedRNN's.

  The default variant is "NP" (`cells.lstm.DEFAULT_VARIANT`, as `cells.LSTMCell`'s), the
  peephole-free LSTM of PyTorch, Keras and Flax, so a model written for them means the same
  here and `load_torch_state_dict` loads nn.LSTM weights into it; the Odyssey study names its
  variants ("V" for the vanilla LSTM with peepholes)."""

  def __init__(self, in_features: int, hidden_size: int, num_layers: int = 1, *,
               variant=DEFAULT_VARIANT, rngs: nnx.Rngs, **options):
    fields, options = split_fields(LSTMDef, options)
    super().__init__(lstm_def(in_features, hidden_size, variant, **fields),
                     num_layers=num_layers, rngs=rngs, **options)


class GRU(StackedRNN):
  """A stack of GRU layers. The keyword arguments are GRUDef's fields (reset_after: True is
  PyTorch's convention, False Cho et al.'s; layer_norm, num_heads) or StackedRNN's."""

  def __init__(self, in_features: int, hidden_size: int, num_layers: int = 1, *, rngs: nnx.Rngs,
               **options):
    fields, options = split_fields(GRUDef, options)
    super().__init__(GRUDef(in_features, hidden_size, **fields), num_layers=num_layers,
                     rngs=rngs, **options)


class SimpleRNN(StackedRNN):
  """A stack of Elman layers (PyTorch's nn.RNN); nonlinearity "tanh" or "relu". The other
  keyword arguments are ElmanDef's fields (num_heads > 1: the recurrence head-wise) or
  StackedRNN's."""

  def __init__(self, in_features: int, hidden_size: int, num_layers: int = 1, *,
               nonlinearity: str = "tanh", rngs: nnx.Rngs, **options):
    fields, options = split_fields(ElmanDef, options)
    super().__init__(ElmanDef(in_features, hidden_size, activation=nonlinearity, **fields),
                     num_layers=num_layers, rngs=rngs, **options)


def load_torch_state_dict(model: StackedRNN, state_dict) -> None:
  """Sets every weight of `model` from a PyTorch nn.LSTM / nn.GRU / nn.RNN state dict with the
  same sizes, num_layers and bidirectional."""
  from rnn_research.torch_weights import params_from_torch
  for k, layer in enumerate(model.layers):
    for direction, cell in enumerate(layer):
      cell.load_params(params_from_torch(cell.definition, state_dict, k, reverse=direction == 1))
