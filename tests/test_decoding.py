"""Incremental decoding equals the full forward pass for every backbone; generation from a
next-step model is consistent with the model's own full-sequence predictions."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from rnn_research.backbones import make_backbone
from rnn_research.generation import decoding
from rnn_research.layers import LSTM
from rnn_research.models import NextStepModel

B, T, D = 2, 6, 3


def rel_err(out, ref):
  return float(np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref))


def model_config(backbone: str, **options):
  config = dict(backbone=backbone, variant="V", hidden_size=8, num_layers=2, backend="scan",
                dropout=0.0, num_heads=2, kernel_size=2, window=3)
  return ml_collections.ConfigDict({**config, **options})


@pytest.mark.parametrize("backbone", ["lstm", "tcn"])
def test_decode_steps_equal_the_full_forward_pass(rng, backbone):
  """The zero state of a backbone without its own decode_state (recurrent carries, the TCN's
  buffers); the Transformer's cache and the MLP's window are held to the full pass in
  test_transformer.py and test_convolutional.py, and by the sampling tests below."""
  model = make_backbone(model_config(backbone), D, nnx.Rngs(0))
  xs = jnp.asarray(rng.normal(size=(B, T, D)))
  full = jax.jit(lambda x: model(x)[0])(xs)
  step = jax.jit(lambda x, s: decoding.decode_step(model, x, s))
  state, outputs = decoding.decode_state(model, B, T, jnp.float64), []
  for t in range(T):
    y, state = step(xs[:, t], state)
    outputs.append(y)
  assert rel_err(jnp.stack(outputs, 1), full) < 1e-6


@nnx.jit
def _forward(model, inputs):
  return model(inputs, None)


def _teacher_forced(model, inputs):
  return np.asarray(_forward(model, inputs))


def test_greedy_piano_rolls_follow_the_models_predictions(rng):
  """Temperature 0: every drawn frame is the thresholded prediction of the full forward pass
  over the zero frame, the primer and the frames drawn before it."""
  model = NextStepModel(model_config("lstm"), 88, 88, rngs=nnx.Rngs(0))
  primer = (rng.uniform(size=(B, 3, 88)) < 0.1).astype(np.float32)
  rolls = np.asarray(decoding.sample_piano_rolls(model, jax.random.key(0), B, 5,
                                                 temperature=0.0, primer=primer))
  assert rolls.shape == (B, 5, 88) and rolls.dtype == np.uint8
  inputs = np.concatenate([np.zeros((B, 1, 88), np.float32), primer, rolls[:, :-1]], axis=1)
  logits = _teacher_forced(model, jnp.asarray(inputs, jnp.float32))
  np.testing.assert_array_equal(rolls, logits[:, 3:] > 0)


def test_piano_roll_keys_are_drawn_with_the_models_probabilities():
  model = NextStepModel(model_config("mlp"), 88, 88, rngs=nnx.Rngs(0))
  rolls = np.asarray(decoding.sample_piano_rolls(model, jax.random.key(1), 4000, 1))
  expected = jax.nn.sigmoid(_teacher_forced(model, jnp.zeros((1, 1, 88), jnp.float32)))[0, 0]
  observed = rolls[:, 0].mean(0)
  sigma = np.sqrt(expected * (1 - expected) / len(rolls))
  assert np.all(np.abs(observed - expected) < 5 * sigma + 1e-9)


def test_greedy_tokens_follow_the_models_predictions(rng):
  model = NextStepModel(model_config("transformer"), 7, 7, embed=True, rngs=nnx.Rngs(0))
  primer = rng.integers(3, 7, size=(B, 2))
  ids, lengths = decoding.sample_tokens(model, jax.random.key(0), B, 6, start_id=1,
                                        primer=primer, temperature=0.0)
  ids = np.asarray(ids)
  np.testing.assert_array_equal(lengths, [6] * B)
  inputs = np.concatenate([np.ones((B, 1), np.int32), primer, ids[:, :-1]], axis=1)
  logits = _teacher_forced(model, jnp.asarray(inputs, jnp.int32))
  np.testing.assert_array_equal(ids, logits[:, 2:].argmax(-1))


def test_what_cannot_decode_is_refused():
  abstract = lambda make: nnx.eval_shape(make)  # the checks come before any array is read
  bidirectional = abstract(lambda: LSTM(D, 4, bidirectional=True, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="bidirectional backbone"):
    decoding.decode_state(bidirectional, B, T)
  encoder = abstract(lambda: make_backbone(model_config("transformer", causal=False), D,
                                           nnx.Rngs(0)))
  with pytest.raises(ValueError, match="causal Transformer"):
    decoding.decode_state(encoder, B, T)
  with pytest.raises(ValueError, match="max_length must be a positive int"):
    decoding.decode_state(encoder, B, 0)
  rolls = abstract(lambda: NextStepModel(model_config("gru"), 88, 88, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="use sample_piano_rolls"):
    decoding.sample_tokens(rolls, jax.random.key(0), B, 4, start_id=1)
  with pytest.raises(ValueError, match=r"primer must be \[batch=2, steps, 88\]"):
    decoding.sample_piano_rolls(rolls, jax.random.key(0), B, 4, primer=np.zeros((B, 3, 5)))
