"""Many-to-one and tagging heads: the summary is the right step of the right direction (checked
against each sequence run alone, unpadded), pooling against NumPy, padding ignored, bad input."""
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from rnn_research.models.encoder import pool
from rnn_research.models.labelling import (SequenceClassifier, SequenceTagger, correct,
                                           label_loss)


def config(**overrides):
  values = dict(backbone="lstm", variant="NP", hidden_size=6, num_layers=2, bidirectional=True)
  return ml_collections.ConfigDict({**values, **overrides})


def test_bidirectional_summary_is_forward_last_and_backward_first(rng):
  """Padded batch vs each sequence alone: the forward stack's output at the sequence's last
  step, and the backward stack's output after reading the reversed sequence to its end."""
  model = SequenceClassifier(config(), 9, 3, embed=True, rngs=nnx.Rngs(0))
  ids = rng.integers(1, 9, size=(3, 7))
  lengths = np.array([7, 3, 5])
  backbone = model.encoder.backbone

  @nnx.jit
  def runs(model):
    alone = []
    for row, length in zip(ids, lengths):
      xs = model.encoder.embed(row[None, :length])
      forward = backbone.forward(xs)[0][0, -1]
      backward = backbone.backward(xs[:, ::-1])[0][0, -1]
      alone.append((forward, backward))
    return model.features(ids, lengths), model(ids, lengths), alone

  features, logits, alone = jax.tree.map(np.asarray, runs(model))
  want = np.stack([np.concatenate(pair) for pair in alone])
  assert features.shape == (3, 12) and logits.shape == (3, 3)
  np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-6)
  w, b = np.asarray(model.head.kernel[...]), np.asarray(model.head.bias[...])
  np.testing.assert_allclose(logits, want @ w + b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_pooling_matches_numpy(rng, pooling):
  ys = rng.normal(size=(3, 5, 4))
  lengths = np.array([5, 1, 3])
  want = []
  for row, length in zip(ys, lengths):
    valid = row[:length]
    want.append({"last": valid[-1], "mean": valid.mean(0), "max": valid.max(0)}[pooling])
  np.testing.assert_allclose(pool(ys, lengths, pooling), np.stack(want), rtol=1e-12)


def test_tagger_ignores_padding_and_reads_both_directions(rng):
  model = SequenceTagger(config(backbone="gru", num_layers=1), 9, 4, embed=True,
                         rngs=nnx.Rngs(1))
  ids = rng.integers(1, 9, size=(2, 6))
  lengths = np.array([6, 4])
  noisy, later = ids.copy(), ids.copy()
  noisy[1, 4:] = rng.integers(0, 9, size=2)
  later[:, 3] = (ids[:, 3] % 8) + 1  # a different token at step 3

  @nnx.jit
  def runs(model):
    return model(ids, lengths), model(noisy, lengths), model(later, lengths)

  logits, noisy_logits, later_logits = map(np.asarray, runs(model))
  assert logits.shape == (2, 6, 4)
  np.testing.assert_allclose(noisy_logits[1, :4], logits[1, :4], rtol=1e-5, atol=1e-6)
  # A bidirectional tagger's step 0 sees step 3.
  assert np.abs(later_logits[:, 0] - logits[:, 0]).min() > 1e-6


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_classes"):
    SequenceClassifier(config(), 5, 1, embed=True, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="model.pooling"):
    SequenceClassifier(config(pooling="first"), 5, 2, embed=True, rngs=nnx.Rngs(0))
  model = SequenceTagger(config(bidirectional=False, num_layers=1), 5, 3, embed=True,
                         rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="integer token ids"):
    model(np.zeros((2, 3)), np.array([3, 3]))
  with pytest.raises(ValueError, match="lengths must be"):
    model(np.zeros((2, 3), np.int32), np.array([3, 3, 3]))
  with pytest.raises(ValueError, match=r"\[batch, time, 5\] features"):
    SequenceClassifier(config(bidirectional=False, num_layers=1), 5, 2,
                       rngs=nnx.Rngs(0))(np.zeros((2, 3, 4)), None)


def test_loss_and_accuracy_count_only_the_labelled_positions(rng):
  """Per sequence (no mask) and per step (mask), against NumPy's cross-entropy."""
  for shape, mask in (((3,), None), ((2, 5), np.array([[1, 1, 1, 0, 0], [1] * 5], bool))):
    logits = rng.normal(size=(*shape, 4))
    labels = rng.integers(0, 4, size=shape)
    weight = np.ones(shape, bool) if mask is None else mask
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
    total, count = label_loss(logits, labels, mask)
    np.testing.assert_allclose(total, nll[weight].sum(), rtol=1e-6)
    hits, seen = correct(logits, labels, mask)
    assert int(count) == int(seen) == weight.sum()
    assert int(hits) == ((logits.argmax(-1) == labels) & weight).sum()
  with pytest.raises(ValueError, match=r"must have the shape of the logits without.*\(3,\)"):
    label_loss(rng.normal(size=(3, 4)), np.zeros((3, 1), int))
