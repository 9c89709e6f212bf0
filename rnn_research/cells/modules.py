"""Flax NNX modules that own a cell's parameters and call its pure functions.

Every module here is an `nnx.RNNCellBase`, so it also drops into Flax's own `nnx.RNN`:
`__call__(carry, x [B, D]) -> (carry, y [B, out])`, `initialize_carry(input_shape)`.
"""
import jax.numpy as jnp
from flax import nnx

from rnn_research.cells import base
from rnn_research.cells.elman import ElmanDef
from rnn_research.cells.gru import GRUDef
from rnn_research.cells.lstm import DEFAULT_VARIANT, lstm_def
from rnn_research.cells.mgu import MGUDef
from rnn_research.cells.mut import MUTDef


class CellModule(nnx.RNNCellBase):
  """Owns the parameters of `definition` as one `nnx.Param` per name (W, b, R, ...)."""

  def __init__(self, definition: base.CellDef, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.definition = definition
    for name, value in definition.init_params(rngs.params(), param_dtype).items():
      setattr(self, name, nnx.Param(value))

  @property
  def params(self) -> base.Params:
    """{name: array} in the layout of the cell definition."""
    return {name: getattr(self, name)[...] for name in self.definition.param_shapes()}

  def load_params(self, params: base.Params) -> None:
    """Replaces every parameter; raises ValueError on a missing name or a wrong shape."""
    self.definition.check_params(params)
    for name, value in params.items():
      getattr(self, name)[...] = jnp.asarray(value, getattr(self, name)[...].dtype)

  def __call__(self, carry, x):
    return self.definition.step(self.params, carry, x)

  def initialize_carry(self, input_shape, rngs=None, carry_init=None):
    """The all-zero carry for inputs of shape [..., D] (rngs and carry_init are unused)."""
    del rngs, carry_init
    return self.definition.initial_carry(tuple(input_shape[:-1]), self.params["W"].dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class LSTMCell(CellModule):
  """An LSTM of the Odyssey family; `variant` is a preset name of `lstm.PRESETS`, a layer-normalised
  preset of `lstm.LAYER_NORM_PRESETS` ("LN-NP", "LN-V", ...) or an LSTMSpec; the other keyword
  arguments are `lstm.LSTMDef`'s fields (proj_size, forget_bias, cell_clip, num_heads).

  The default variant is "NP" (`lstm.DEFAULT_VARIANT`, as `layers.LSTM`'s), the peephole-free
  LSTM of PyTorch, Keras and Flax, so a model written for them means the same here and their
  weights import as they are; the Odyssey vanilla LSTM with peepholes is variant="V"."""

  def __init__(self, in_features: int, hidden_size: int, *, variant=DEFAULT_VARIANT,
               param_dtype=jnp.float32, rngs: nnx.Rngs, **fields):
    super().__init__(lstm_def(in_features, hidden_size, variant, **fields),
                     param_dtype=param_dtype, rngs=rngs)


class GRUCell(CellModule):
  """A GRU; the keyword arguments are `gru.GRUDef`'s fields: reset_after (True: the cuDNN/PyTorch
  convention, False: Cho et al. 2014), layer_norm, num_heads."""

  def __init__(self, in_features: int, hidden_size: int, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs, **fields):
    super().__init__(GRUDef(in_features, hidden_size, **fields), param_dtype=param_dtype,
                     rngs=rngs)


class ElmanCell(CellModule):
  """The simple RNN, h = act(W x + b + R h⁻); the keyword arguments are `elman.ElmanDef`'s
  fields: activation ("tanh" or "relu"), num_heads (> 1: R block-diagonal)."""

  def __init__(self, in_features: int, hidden_size: int, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs, **fields):
    super().__init__(ElmanDef(in_features, hidden_size, **fields), param_dtype=param_dtype,
                     rngs=rngs)


class MGUCell(CellModule):
  """The minimal gated unit; the keyword arguments are `mgu.MGUDef`'s fields (forget_bias)."""

  def __init__(self, in_features: int, hidden_size: int, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs, **fields):
    super().__init__(MGUDef(in_features, hidden_size, **fields), param_dtype=param_dtype,
                     rngs=rngs)


class MUTCell(CellModule):
  """One of Jozefowicz et al.'s MUT1, MUT2, MUT3; the keyword arguments are `mut.MUTDef`'s fields
  (variant, default "MUT1")."""

  def __init__(self, in_features: int, hidden_size: int, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs, **fields):
    super().__init__(MUTDef(in_features, hidden_size, **fields), param_dtype=param_dtype,
                     rngs=rngs)
