"""The TCN and the sliding-window MLP against float64 NumPy references written step by step;
their receptive fields, padding, chunked continuation and argument checks."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.backbones.convolutional import TCN, WindowMLP

B, T, D, C = 3, 9, 4, 5
LENGTHS = np.array([T, 5, 1])


def rel_err(out, ref):
  return float(np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref))


@nnx.jit
def call(model, xs, lengths, carry=None):
  return model(xs, lengths=lengths, initial_carry=carry)


def _p(variable):
  return np.asarray(variable[...], np.float64)


def causal_conv_reference(x, conv, dilation: int):
  """y[t] = b + sum_j x[t - j * dilation] @ W[k - 1 - j] over a [B, T, C] sequence, zeros
  before the start."""
  kernel, bias = _p(conv.kernel), _p(conv.bias)  # kernel [k, in, out]
  taps = kernel.shape[0]
  y = np.zeros(x.shape[:2] + (kernel.shape[2],)) + bias
  for t in range(x.shape[1]):
    for j in range(taps):
      if t - j * dilation >= 0:
        y[:, t] += x[:, t - j * dilation] @ kernel[taps - 1 - j]
  return y


def tcn_reference(model: TCN, xs):
  relu = lambda v: np.maximum(v, 0)
  x = xs
  for i, block in enumerate(model.blocks):
    h = relu(causal_conv_reference(x, block.conv1, 2 ** i))
    h = relu(causal_conv_reference(h, block.conv2, 2 ** i))
    skip = x if block.residual is None else x @ _p(block.residual.kernel) + _p(block.residual.bias)
    x = relu(skip + h)
  return x


def window_mlp_reference(model: WindowMLP, xs):
  """h_t = relu(concat(x_{t-l+1}, ..., x_t) @ W1 + b1), zeros before the start; then dense."""
  window = model.window
  padded = np.concatenate([np.zeros((xs.shape[0], window - 1, xs.shape[2])), xs], axis=1)
  stacked = np.stack([padded[:, t:t + window].reshape(xs.shape[0], -1)
                      for t in range(xs.shape[1])], axis=1)  # [B, T, l * D], oldest first
  h = np.maximum(stacked @ _p(model.first.kernel).reshape(-1, model.hidden_size)
                 + _p(model.first.bias), 0)
  for layer in model.layers:
    h = np.maximum(h @ _p(layer.kernel) + _p(layer.bias), 0)
  return h


def _masked(ys, lengths):
  return np.where((np.arange(ys.shape[1])[None, :] < lengths[:, None])[..., None], ys, 0.0)


@pytest.fixture(scope="module")
def models():
  return {"tcn": TCN(D, C, num_layers=2, kernel_size=2, rngs=nnx.Rngs(0)),
          "mlp": WindowMLP(D, C, num_layers=2, window=3, rngs=nnx.Rngs(1))}


@pytest.mark.parametrize("name", ["tcn", "mlp"])
def test_forward_matches_reference(rng, models, name):
  model = models[name]
  reference = tcn_reference if name == "tcn" else window_mlp_reference
  xs = rng.normal(size=(B, T, D))
  ys, _ = call(model, jnp.asarray(xs), jnp.asarray(LENGTHS))
  # Each sequence alone, unpadded: padding after the end cannot reach the valid outputs.
  expected = np.stack([np.pad(reference(model, xs[b:b + 1, :n])[0], ((0, T - n), (0, 0)))
                       for b, n in enumerate(LENGTHS)])
  assert rel_err(ys, expected) < 1e-6


@pytest.mark.parametrize("name", ["tcn", "mlp"])
def test_receptive_field(rng, models, name):
  """Output t changes with input t - field + 1 and not with input t - field."""
  model = models[name]
  field = model.receptive_field if name == "tcn" else model.window
  assert field == (1 + 2 * (2 - 1) * (2 ** 2 - 1) if name == "tcn" else 3)  # Bai et al.'s
  xs = rng.normal(size=(B, T, D))
  ys = np.asarray(call(model, jnp.asarray(xs), jnp.asarray([T] * B))[0])
  t = T - 1
  for step, changes in ((t - field, False), (t - field + 1, True)):
    changed = xs.copy()
    changed[:, step] += 1.0
    out = np.asarray(call(model, jnp.asarray(changed), jnp.asarray([T] * B))[0])
    assert (np.abs(out[:, t] - ys[:, t]).max() > 0) == changes, step


@pytest.mark.parametrize("name", ["tcn", "mlp"])
def test_chunks_continue_from_each_sequence_end(rng, models, name):
  """The carry of a padded chunk holds each sequence's last inputs: the next chunk continues
  every sequence as if it were read whole."""
  model = models[name]
  reference = tcn_reference if name == "tcn" else window_mlp_reference
  xs = rng.normal(size=(B, T, D))
  _, carry = call(model, jnp.asarray(xs), jnp.asarray(LENGTHS))
  more = rng.normal(size=(B, T, D))
  ys, _ = call(model, jnp.asarray(more), jnp.asarray([T] * B), carry)
  for b, n in enumerate(LENGTHS):
    whole = np.concatenate([xs[b, :n], more[b]])[None]
    assert rel_err(np.asarray(ys)[b], reference(model, whole)[0, n:]) < 1e-6


def test_bad_arguments_are_named(models):
  with pytest.raises(ValueError, match="kernel_size must be a positive int"):
    TCN(D, C, kernel_size=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="window must be a positive int"):
    WindowMLP(D, C, window=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
    TCN(D, C, dropout=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=f"in_features={D}"):
    models["tcn"](jnp.zeros((B, T, D + 1)))
  with pytest.raises(ValueError, match="lengths must lie in"):
    models["mlp"](jnp.zeros((B, T, D)), lengths=jnp.asarray([0, 1, 1]))
  with pytest.raises(ValueError, match="initial_carry leaves must have shapes"):
    models["mlp"](jnp.zeros((B, T, D)), initial_carry=jnp.zeros((B, 5, D)))
