"""Two feed-forward ways of processing sequences, with the interface of the recurrent stacks:

- `TCN`: a temporal convolution network (Bai, Kolter & Koltun 2018): residual blocks of two
  dilated causal convolutions (kernel k, dilation 2^i in block i), ReLU and dropout, a 1x1
  convolution on the residual path where the width changes. Each output sees the last
  1 + 2(k - 1)(2^L - 1) inputs. (The paper's weight normalisation is left out.)
- `WindowMLP`: the sliding-window baseline y_t = f(x_t, ..., x_{t-l+1}), an MLP on the last l
  inputs. (Next-step inputs are already the targets delayed by one step, so this is the
  course's y_n = f(x_{n-1}, ..., x_{n-l}).)

Both are causal, so padding after a sequence's end cannot reach its valid outputs, which are
zero past `lengths` as in the recurrent stacks. Their carry is the history each convolution
needs, the last (k - 1) * dilation inputs before the next step: passed back as `initial_carry`,
a chunk continues a sequence exactly, and one step at a time is incremental decoding.
Axis letters: B batch, T time, D in_features, C channels (hidden_size), R history steps.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.layers import sequence


def _check_positive(**values) -> None:
  for name, value in values.items():
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_dropout(rate: float) -> None:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout must be in [0, 1), got {rate!r}")


class CausalConv(nnx.Module):
  """y_t = b + sum_j x_{t - j * dilation} W[k - 1 - j], j < kernel_size, over `history` and
  then x. Written as k shifted matmuls: vmapped over the trials of a pack they stay batched
  matmuls (a vmapped convolution becomes a grouped one, slow to compile and run on a CPU)."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int, dilation: int = 1,
               *, rngs: nnx.Rngs):
    self.in_features, self.kernel_size, self.dilation = in_features, kernel_size, dilation
    self.history = (kernel_size - 1) * dilation
    # The layout and initialiser of nnx.Conv: kernel [k, in, out], fan-in k * in.
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (kernel_size, in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def __call__(self, x, history, lengths):
    """x [B, T, C], history [B, R, C] (the inputs before x), lengths [B] or None ->
    (y [B, T, out], the last R inputs up to each sequence's end: the next chunk's history)."""
    full = jnp.concatenate([history.astype(x.dtype), x], axis=1)
    steps = x.shape[1]
    y = self.bias[...] + sum(full[:, i * self.dilation:i * self.dilation + steps] @ self.kernel[i]
                             for i in range(self.kernel_size))
    if lengths is None:
      new_history = full[:, full.shape[1] - self.history:]
    else:
      index = lengths[:, None] + jnp.arange(self.history)
      new_history = jnp.take_along_axis(full, index[..., None], axis=1)
    return y, new_history

  def zero_history(self, batch: int, dtype):
    return jnp.zeros((batch, self.history, self.in_features), dtype)


class TemporalBlock(nnx.Module):
  """relu(x' + dropout(relu(conv2(dropout(relu(conv1(x))))))), x' = x or a 1x1 conv of x."""

  def __init__(self, in_features: int, channels: int, kernel_size: int, dilation: int, *,
               dropout: nnx.Dropout | None, rngs: nnx.Rngs):
    self.conv1 = CausalConv(in_features, channels, kernel_size, dilation, rngs=rngs)
    self.conv2 = CausalConv(channels, channels, kernel_size, dilation, rngs=rngs)
    self.residual = (nnx.Linear(in_features, channels, rngs=rngs)
                     if in_features != channels else None)
    self.dropout = dropout

  def _drop(self, x):
    return x if self.dropout is None else self.dropout(x)

  def __call__(self, x, carry, lengths):
    h, history1 = self.conv1(x, carry[0], lengths)
    h, history2 = self.conv2(self._drop(jax.nn.relu(h)), carry[1], lengths)
    skip = x if self.residual is None else self.residual(x)
    return jax.nn.relu(skip + self._drop(jax.nn.relu(h))), (history1, history2)

  def zero_carry(self, batch: int, dtype):
    return (self.conv1.zero_history(batch, dtype), self.conv2.zero_history(batch, dtype))


def _masked(ys, lengths):
  if lengths is None:
    return ys
  return jnp.where((jnp.arange(ys.shape[1])[None, :] < lengths[:, None])[..., None], ys, 0)


class _Causal(nnx.Module):
  """What both backbones share: input checks, the carry's default and check, the output mask."""

  def _prepare(self, xs, lengths, initial_carry):
    sequence.check_inputs(xs, self.in_features, time_major=False)
    lengths = sequence.check_lengths(lengths, xs.shape[0], xs.shape[1])
    zero = self.zero_carry(xs.shape[0], xs.dtype)
    if initial_carry is None:
      return lengths, zero
    sequence.check_carry(initial_carry, zero)
    return lengths, initial_carry


class TCN(_Causal):
  """A temporal convolution network.

  Args:
    in_features: D of the inputs.
    channels: C, the width of every block (the output size).
    num_layers: residual blocks L; block i has dilation 2^i.
    kernel_size: k, taps of each convolution.
    dropout: rate after each convolution's ReLU, in [0, 1).
  """

  def __init__(self, in_features: int, channels: int, *, num_layers: int = 4,
               kernel_size: int = 3, dropout: float = 0.0, rngs: nnx.Rngs):
    _check_positive(in_features=in_features, channels=channels, num_layers=num_layers,
                    kernel_size=kernel_size)
    _check_dropout(dropout)
    self.in_features, self.channels = in_features, channels
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
    self.blocks = nnx.List([
        TemporalBlock(in_features if i == 0 else channels, channels, kernel_size, 2 ** i,
                      dropout=self.dropout, rngs=rngs) for i in range(num_layers)])

  @property
  def output_size(self) -> int:
    return self.channels

  @property
  def receptive_field(self) -> int:
    """Inputs each output depends on: 1 + the history of every convolution."""
    return 1 + sum(b.conv1.history + b.conv2.history for b in self.blocks)

  def zero_carry(self, batch: int, dtype):
    return tuple(block.zero_carry(batch, dtype) for block in self.blocks)

  def __call__(self, xs, *, lengths=None, initial_carry=None):
    """xs [B, T, D] -> (ys [B, T, C], per block (history of conv1, history of conv2))."""
    lengths, carry = self._prepare(xs, lengths, initial_carry)
    finals = []
    for block, block_carry in zip(self.blocks, carry):
      xs, final = block(xs, block_carry, lengths)
      finals.append(final)
    return _masked(xs, lengths), tuple(finals)


class WindowMLP(_Causal):
  """The sliding-window MLP: a first layer on the concatenated last `window` inputs (a causal
  convolution of kernel `window`), then num_layers - 1 dense layers, each with a ReLU.

  Args:
    in_features: D of the inputs.
    hidden_size: width of every layer (the output size).
    num_layers: layers of the MLP.
    window: l, the inputs each output reads (the current one and l - 1 before it).
    dropout: rate between layers, in [0, 1).
  """

  def __init__(self, in_features: int, hidden_size: int, *, num_layers: int = 2,
               window: int = 8, dropout: float = 0.0, rngs: nnx.Rngs):
    _check_positive(in_features=in_features, hidden_size=hidden_size, num_layers=num_layers,
                    window=window)
    _check_dropout(dropout)
    self.in_features, self.hidden_size, self.window = in_features, hidden_size, window
    self.first = CausalConv(in_features, hidden_size, window, rngs=rngs)
    self.layers = nnx.List([nnx.Linear(hidden_size, hidden_size, rngs=rngs)
                            for _ in range(num_layers - 1)])
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

  @property
  def output_size(self) -> int:
    return self.hidden_size

  def zero_carry(self, batch: int, dtype):
    return self.first.zero_history(batch, dtype)

  def __call__(self, xs, *, lengths=None, initial_carry=None):
    """xs [B, T, D] -> (ys [B, T, hidden_size], the last window - 1 inputs [B, l - 1, D])."""
    lengths, history = self._prepare(xs, lengths, initial_carry)
    h, history = self.first(xs, history, lengths)
    h = jax.nn.relu(h)
    for layer in self.layers:
      h = jax.nn.relu(layer(h if self.dropout is None else self.dropout(h)))
    return _masked(h, lengths), history


TCN_KEYS = dict(kernel_size=3)  # the model config keys of "tcn" besides the common ones
MLP_KEYS = dict(window=8)  # and of "mlp"


def tcn_backbone(config, in_features: int, rngs: nnx.Rngs) -> TCN:
  """The `model.backbone = "tcn"` builder: channels = hidden_size, num_layers blocks,
  kernel_size and dropout."""
  return TCN(in_features, config.hidden_size, num_layers=config.num_layers,
             kernel_size=config.kernel_size, dropout=config.dropout, rngs=rngs)


def mlp_backbone(config, in_features: int, rngs: nnx.Rngs) -> WindowMLP:
  """The `model.backbone = "mlp"` builder: hidden_size, num_layers, window and dropout."""
  return WindowMLP(in_features, config.hidden_size, num_layers=config.num_layers,
                   window=config.window, dropout=config.dropout, rngs=rngs)
