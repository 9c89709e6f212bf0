"""Encoder–decoder: attention against NumPy, padding ignored, teacher forcing shapes and
causality, greedy decoding consistent with teacher forcing, beam search (beam 1 = greedy; a
wide beam finds the exhaustive search's best sequence)."""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from rnn_research.models.seq2seq import (BahdanauAttention, LuongAttention, Memory, Seq2Seq,
                                         attend, decoder_inputs)

START, END = 1, 2


def config(**overrides):
  values = dict(backbone="gru", hidden_size=8, num_layers=1, bidirectional=True,
                attention="bahdanau", decoder_cell="lstm")
  return ml_collections.ConfigDict({**values, **overrides})


def rel_err(got, want):
  return np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want)


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("kind", ["bahdanau", "luong"])
def test_attention_matches_numpy_and_ignores_padding(rng, kind):
  batch, steps, query_size, memory_size = 3, 5, 4, 6
  rngs = nnx.Rngs(0)
  attention = (BahdanauAttention(query_size, memory_size, 7, rngs=rngs) if kind == "bahdanau"
               else LuongAttention(query_size, memory_size, rngs=rngs))
  query = rng.normal(size=(batch, query_size))
  values = rng.normal(size=(batch, steps, memory_size))
  lengths = np.array([5, 2, 3])
  mask = np.arange(steps)[None] < lengths[:, None]
  memory = Memory(jnp.asarray(values), attention.keys(jnp.asarray(values)), jnp.asarray(mask))
  context, weights = attend(attention, jnp.asarray(query), memory)

  if kind == "bahdanau":
    wq = np.asarray(attention.query.kernel[...], np.float64)
    wm = np.asarray(attention.memory.kernel[...], np.float64)
    bm = np.asarray(attention.memory.bias[...], np.float64)
    v = np.asarray(attention.v.kernel[...], np.float64)[:, 0]
    scores = np.tanh(values @ wm + bm + (query @ wq)[:, None]) @ v
  else:
    wm = np.asarray(attention.memory.kernel[...], np.float64)
    scores = np.einsum("bq,bsq->bs", query, values @ wm)
  scores = np.where(mask, scores, -np.inf)
  want = np.exp(scores - scores.max(-1, keepdims=True))
  want /= want.sum(-1, keepdims=True)
  assert rel_err(weights, want) < 1e-5
  assert rel_err(context, np.einsum("bs,bsm->bm", want, values)) < 1e-5
  assert np.all(np.asarray(weights)[~mask] == 0)


def test_padding_and_future_targets_change_nothing(rng):
  """Row 1's logits do not depend on what fills its source padding (the bidirectional encoder
  and the attention both ignore it) and equal the row decoded alone; teacher forcing is causal:
  changing decoder input t changes no logits before t."""
  model = Seq2Seq(config(attention="bahdanau"), 9, 7, rngs=nnx.Rngs(1))
  src = rng.integers(3, 9, size=(2, 6))
  lengths = np.array([6, 4])
  dec = np.asarray(decoder_inputs(rng.integers(3, 7, size=(2, 5)), START))
  noisy, changed = src.copy(), dec.copy()
  noisy[1, 4:] = rng.integers(0, 9, size=2)
  changed[:, 3] = 6

  @nnx.jit  # one compiled program for the five runs
  def runs(model):
    logits, weights = model(src, lengths, dec, return_attention=True)
    return (logits, weights, model(noisy, lengths, dec), model(src[1:, :4], lengths[1:], dec[1:]),
            model(src, lengths, changed))

  logits, weights, noisy_logits, alone, after = map(np.asarray, runs(model))
  assert logits.shape == (2, 5, 7) and weights.shape == (2, 5, 6)
  assert np.all(weights[1, :, 4:] == 0)
  np.testing.assert_allclose(noisy_logits, logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(alone[0], logits[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(after[:, :3], logits[:, :3], rtol=1e-6)
  assert np.abs(after[:, 3:] - logits[:, 3:]).max() > 1e-4


def test_greedy_agrees_with_teacher_forcing_and_beam_1(rng):
  model = Seq2Seq(config(attention="none", decoder_cell="gru"), 9, 7, rngs=nnx.Rngs(2))
  src, lengths = rng.integers(3, 9, size=(3, 5)), np.array([5, 3, 4])
  options = dict(start_id=START, end_id=END, max_length=6)

  @nnx.jit
  def runs(model):
    ids, out_lengths = model.greedy(src, lengths, **options)
    return (ids, out_lengths, model(src, lengths, decoder_inputs(ids, START)),
            model.beam_search(src, lengths, beam_size=1, **options))

  ids, out_lengths, logits, (beam_ids, beam_lengths, scores) = jax.tree.map(np.asarray,
                                                                            runs(model))
  valid = np.arange(6)[None] < out_lengths[:, None]
  np.testing.assert_array_equal(np.where(valid, logits.argmax(-1), 0), np.where(valid, ids, 0))
  assert np.all(ids[~valid] == 0)
  np.testing.assert_array_equal(beam_ids, ids)
  np.testing.assert_array_equal(beam_lengths, out_lengths)
  logp = np.take_along_axis(log_softmax(logits.astype(np.float64)), ids[..., None], -1)[..., 0]
  np.testing.assert_allclose(scores, np.where(valid, logp, 0).sum(-1), rtol=1e-5)


def test_wide_beam_finds_the_exhaustive_best(rng):
  """With V tokens and L steps, a beam of V**(L-1) keeps every prefix, so it must return the
  highest-scoring of all V**L sequences (scored here by teacher forcing)."""
  vocab, steps = 4, 3
  model = Seq2Seq(config(attention="luong", bidirectional=False), 8, vocab, rngs=nnx.Rngs(3))
  src, lengths = rng.integers(3, 8, size=(1, 4)), np.array([4])
  candidates = np.array(list(itertools.product(range(vocab), repeat=steps)))
  is_end = candidates == END
  valid = np.arange(steps)[None] < np.where(is_end.any(1), is_end.argmax(1) + 1, steps)[:, None]
  candidates, index = np.unique(np.where(valid, candidates, 0), axis=0, return_index=True)
  valid, many = valid[index], len(candidates)

  @nnx.jit
  def runs(model):
    logits = model(np.repeat(src, many, 0), np.repeat(lengths, many),
                   decoder_inputs(candidates, START))
    return logits, model.beam_search(src, lengths, beam_size=vocab ** (steps - 1),
                                     start_id=START, end_id=END, max_length=steps)

  logits, (ids, _, score) = jax.tree.map(np.asarray, runs(model))
  logp = np.take_along_axis(log_softmax(logits.astype(np.float64)), candidates[..., None],
                            -1)[..., 0]
  totals = np.where(valid, logp, 0).sum(1)
  np.testing.assert_allclose(score[0], totals.max(), rtol=1e-5)
  found = np.flatnonzero((candidates == ids).all(1))
  np.testing.assert_allclose(totals[found], totals.max(), rtol=1e-5)


def test_bad_configs_and_inputs():
  with pytest.raises(ValueError, match="model.attention"):
    Seq2Seq(config(attention="dot"), 5, 5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="model.decoder_cell"):
    Seq2Seq(config(decoder_cell="rnn"), 5, 5, rngs=nnx.Rngs(0))
  model = Seq2Seq(config(), 5, 5, rngs=nnx.Rngs(0))
  src, lengths = np.ones((2, 3), np.int32), np.array([3, 3])
  with pytest.raises(ValueError, match="decoder_inputs"):
    model(src, lengths, np.ones((3, 2), np.int32))
  with pytest.raises(ValueError, match="inputs must be integer token ids"):
    model(np.ones((2, 3)), lengths, np.ones((2, 2), np.int32))
  with pytest.raises(ValueError, match="beam_size"):
    model.beam_search(src, lengths, beam_size=0, start_id=START, end_id=END, max_length=3)
