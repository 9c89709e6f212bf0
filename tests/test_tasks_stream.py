"""Truncated BPTT on streams: windows of a concatenated stream, gradients that stop at chunk
boundaries while the carry crosses them, and states that restart where a document begins."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from rnn_research.data.streams import StreamSource
from rnn_research.models import NextStepModel
from rnn_research.models.streaming import run_with_resets, tbptt_loss


def test_windows_follow_the_stream_and_mark_document_starts():
  documents = [np.array([1, 5, 6, 2]), np.array([1, 7, 2]), np.array([1, 8, 9, 9, 2])]
  source = StreamSource(documents, window=3)
  stream = np.concatenate(documents)
  starts = np.isin(np.arange(len(stream)), [0, 4, 7])
  assert len(source) == (len(stream) - 1) // 3 == 3
  for i in range(len(source)):
    window = source[i]
    np.testing.assert_array_equal(window["inputs"], stream[3 * i:3 * i + 3])
    np.testing.assert_array_equal(window["targets"], stream[3 * i + 1:3 * i + 4])
    np.testing.assert_array_equal(window["resets"], starts[3 * i:3 * i + 3])
  with pytest.raises(ValueError, match="too short"):
    StreamSource(documents, window=12)
  with pytest.raises(ValueError, match="window"):
    StreamSource(documents, window=0)


@pytest.fixture(scope="module")
def model():
  config = ml_collections.ConfigDict(dict(backbone="gru", hidden_size=8, num_layers=2))
  return NextStepModel(config, 10, 10, embed=True, rngs=nnx.Rngs(0))


def test_gradient_stops_at_chunk_boundaries_and_the_carry_crosses_them(model, rng):
  """Chunk 0 (steps 0-3) reads only tokens 3 and 4, chunk 1 (steps 4-7) only 5 and 6, and only
  chunk 1 is scored: with k = 4 the embeddings of 3 and 4 get no gradient; with k = 8 (full
  BPTT) they do. The loss itself is the same for both (the carry crosses the boundary) and
  differs from chunk 1 read from a zero state."""
  ids = np.concatenate([rng.integers(3, 5, size=(2, 4)), rng.integers(5, 7, size=(2, 4))], 1)
  targets = rng.integers(0, 10, size=(2, 8))
  resets = np.zeros((2, 8), bool)
  mask = np.broadcast_to(np.arange(8) >= 4, (2, 8))
  graphdef, params, other = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def runs(params):
    def loss(params, k, *window):
      total, count = tbptt_loss(nnx.merge(graphdef, params, other), *window, k1=k)
      return total / count
    window = (ids, resets, targets, mask)
    grad_k4 = jax.grad(loss)(params, 4, *window)
    grad_full = jax.grad(loss)(params, 8, *window)
    alone = loss(params, 4, ids[:, 4:], resets[:, 4:], targets[:, 4:], mask[:, 4:])
    return (grad_k4, grad_full, loss(params, 4, *window), loss(params, 8, *window), alone)

  grad_k4, grad_full, loss_k4, loss_full, alone = runs(params)
  embedding = lambda grads: np.asarray(grads["embed"]["embedding"][...])
  assert np.all(embedding(grad_k4)[3:5] == 0)
  assert np.abs(embedding(grad_full)[3:5]).min() > 0
  assert np.abs(embedding(grad_k4)[5:7]).min() > 0
  np.testing.assert_allclose(loss_k4, loss_full, rtol=1e-6)
  assert abs(float(loss_k4) - float(alone)) > 1e-4


def test_state_restarts_where_a_document_begins(model, rng):
  """From a carried state, the outputs from a document's first step on equal the document read
  alone from zeros; the steps before it still continue the carried state."""
  before, ids = rng.integers(3, 10, size=(2, 3)), rng.integers(3, 10, size=(2, 6))
  resets = np.zeros((2, 6), bool)
  resets[0, 2] = True  # row 0: a document begins at step 2; row 1: none

  @nnx.jit
  def runs(model):
    _, carry = run_with_resets(model, before, np.zeros((2, 3), bool))
    logits, _ = run_with_resets(model, ids, resets, carry)
    alone, _ = run_with_resets(model, ids[:1, 2:], resets[:1, 2:])
    continued, _ = model.backbone(model.embed(ids), initial_carry=carry)
    return logits, alone, model.head(continued)

  logits, alone, continued = map(np.asarray, runs(model))
  np.testing.assert_allclose(logits[0, 2:], alone[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logits[0, :2], continued[0, :2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logits[1], continued[1], rtol=1e-5, atol=1e-6)
  assert np.abs(logits[0, 2:] - continued[0, 2:]).max() > 1e-4


def test_streams_need_a_recurrent_backbone():
  class NotRecurrent(nnx.Module):
    backbone = None

  with pytest.raises(ValueError, match="recurrent backbone"):
    tbptt_loss(NotRecurrent(), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), bool),
               jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool), k1=2)
