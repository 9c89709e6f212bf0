"""The Transformer backbone against a float64 NumPy reference; its causal and padding masks; its
key/value cache against the full forward pass; its argument checks."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.backbones.transformer import Transformer

B, T, D, W, HEADS = 3, 7, 5, 8, 2


def rel_err(out, ref):
  return float(np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref))


def _p(variable):
  return np.asarray(variable[...], np.float64)


def _layer_norm(x, norm):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * _p(norm.scale) + _p(norm.bias)


def _linear(x, layer):
  return x @ _p(layer.kernel) + _p(layer.bias)


def _gelu(x):  # the tanh approximation
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _rotate(x, positions):
  half = x.shape[-1] // 2
  angles = positions[:, None] * 10000.0 ** (-np.arange(half) * 2.0 / x.shape[-1])  # [T, half]
  cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def reference(model: Transformer, xs, lengths):
  """Float64 forward pass written out with explicit softmax over masked scores."""
  batch, steps, _ = xs.shape
  heads, head = model.num_heads, model.width // model.num_heads
  positions = np.arange(steps, dtype=np.float64)
  x = _linear(xs, model.embed)
  if model.positions == "learned":
    x = x + _p(model.position_table.embedding)[:steps]
  elif model.positions == "sinusoidal":
    half = -(-model.width // 2)
    angles = positions[:, None] * 10000.0 ** (-np.arange(half) / half)
    x = x + np.concatenate([np.sin(angles), np.cos(angles)], -1)[:, :model.width]
  t, s = np.arange(steps)[:, None], np.arange(steps)[None, :]
  allowed = (s < lengths[:, None, None]) & ((s <= t) if model.causal else True)  # [B, T, S]
  for block in model.blocks:
    qkv = _linear(_layer_norm(x, block.attention_norm), block.attention.qkv)
    q, k, v = np.split(qkv.reshape(batch, steps, 3 * heads, head), 3, axis=2)
    if model.positions == "rotary":
      q, k = _rotate(q, positions), _rotate(k, positions)
    scores = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(head)
    scores = np.where(allowed[:, None], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("bnts,bsnh->btnh", weights, v).reshape(batch, steps, model.width)
    x = x + _linear(attended, block.attention.out)
    hidden = _gelu(_linear(_layer_norm(x, block.mlp_norm), block.mlp_in))
    x = x + _linear(hidden, block.mlp_out)
  y = _layer_norm(x, model.final_norm)
  return np.where((np.arange(steps)[None, :] < lengths[:, None])[..., None], y, 0.0)


@nnx.jit
def call(model, xs, lengths=None, carry=None):
  """The model's forward pass, compiled (op-by-op dispatch is slower than one compilation)."""
  return model(xs, lengths=lengths, initial_carry=carry)


def _model(positions="rotary", causal=True, heads=HEADS):
  return Transformer(D, W, num_layers=2, num_heads=heads, positions=positions, causal=causal,
                     max_positions=16, rngs=nnx.Rngs(0))


FULL = np.array([T] * B)


@pytest.mark.parametrize("positions, causal",
                         [("learned", True), ("rotary", True), ("sinusoidal", False)])
def test_forward_matches_reference(rng, positions, causal):
  xs = rng.normal(size=(B, T, D))
  lengths = np.array([T, 4, 1])
  model = _model(positions, causal)
  ys, _ = call(model, jnp.asarray(xs), jnp.asarray(lengths))
  assert rel_err(ys, reference(model, xs, lengths)) < 1e-5


def test_causal_mask_hides_the_future(rng):
  model = _model("rotary")
  xs = rng.normal(size=(B, T, D))
  ys = np.asarray(call(model, jnp.asarray(xs), jnp.asarray(FULL))[0])
  for t in (0, 3, T - 2):
    changed = xs.copy()
    changed[:, t + 1:] = rng.normal(size=changed[:, t + 1:].shape)
    out = np.asarray(call(model, jnp.asarray(changed), jnp.asarray(FULL))[0])
    np.testing.assert_array_equal(out[:, :t + 1], ys[:, :t + 1])
    assert np.abs(out[:, t + 1:] - ys[:, t + 1:]).min() > 0  # the future itself does change


@pytest.mark.parametrize("positions, causal", [("learned", True), ("sinusoidal", False)])
def test_padding_never_leaks(rng, positions, causal):
  model = _model(positions, causal)
  lengths = np.array([T, 3, 5])
  xs = rng.normal(size=(B, T, D))
  ys = np.asarray(call(model, jnp.asarray(xs), jnp.asarray(lengths))[0])
  noisy = xs.copy()
  for b, length in enumerate(lengths):
    noisy[b, length:] = 100 * rng.normal(size=noisy[b, length:].shape)
  out = np.asarray(call(model, jnp.asarray(noisy), jnp.asarray(lengths))[0])
  np.testing.assert_array_equal(out, ys)
  for b, length in enumerate(lengths):
    assert not out[b, length:].any()
    alone = reference(model, xs[b:b + 1, :length], np.array([length]))[0]  # no padding at all
    assert rel_err(out[b, :length], alone) < 1e-5


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cached_decoding_equals_full_forward(rng, positions):
  """A prompt of 4 steps in one chunk, then one step at a time, from an empty cache."""
  model = _model(positions)
  xs = jnp.asarray(rng.normal(size=(B, T, D)))
  full, _ = call(model, xs, jnp.asarray(FULL))
  state = model.decode_state(B, T, jnp.float64)
  first, state = call(model, xs[:, :4], carry=state)
  outputs = [first]
  for t in range(4, T):
    y, state = call(model, xs[:, t:t + 1], carry=state)
    outputs.append(y)
  assert rel_err(jnp.concatenate(outputs, 1), full) < 1e-6
  np.testing.assert_array_equal(state["position"], FULL)


def test_returned_cache_continues_a_padded_chunk(rng):
  """A chunk's cache (keys of valid steps only) continues each sequence from its own end."""
  model = _model("rotary")
  xs = rng.normal(size=(2, T, D))
  lengths = [T - 2, 4]
  _, cache = call(model, jnp.asarray(xs[:, :T - 2]), jnp.asarray(lengths))
  step = rng.normal(size=(2, 1, D))
  y, _ = call(model, jnp.asarray(step), carry=cache)
  for b, length in enumerate(lengths):
    whole = np.concatenate([xs[b, :length], step[b]])[None]
    expected = reference(model, whole, np.array([length + 1]))[0, -1]
    assert rel_err(np.asarray(y)[b, 0], expected) < 1e-5


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="multiple of num_heads=3"):
    Transformer(D, 8, num_heads=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="even head width"):
    Transformer(D, 6, num_heads=2, positions="rotary", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="positions must be one of"):
    Transformer(D, 8, positions="absolute", rngs=nnx.Rngs(0))
  model = _model()
  with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
    model(jnp.zeros((T, D)))
  with pytest.raises(ValueError, match=f"in_features={D}"):
    model(jnp.zeros((B, T, D + 1)))
  with pytest.raises(ValueError, match="lengths must lie in"):
    model(jnp.zeros((B, T, D)), lengths=jnp.asarray([T + 1, 1, 1]))
  with pytest.raises(ValueError, match="more than max_positions=16"):
    _model("learned")(jnp.zeros((1, 17, D)))
  with pytest.raises(ValueError, match="initial_carry must hold 2 layers"):
    model(jnp.zeros((B, 1, D)), initial_carry=_model(heads=4).decode_state(B, 3))
  with pytest.raises(ValueError, match="causal Transformer"):
    _model(causal=False).decode_state(B, T)
