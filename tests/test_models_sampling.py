"""Token sampling: greedy, temperature and top-k statistics against a NumPy softmax, and the
autoregressive loop's end-of-sequence handling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_research.generation.sampling import sample_loop, sample_token


def test_greedy_and_top_1_take_the_argmax(rng):
  logits = jnp.asarray(rng.normal(size=(16, 9)))
  want = np.argmax(np.asarray(logits), -1)
  key = jax.random.key(0)
  np.testing.assert_array_equal(sample_token(key, logits, temperature=0.0), want)
  np.testing.assert_array_equal(sample_token(key, logits, temperature=3.0, top_k=1), want)


@pytest.mark.parametrize("temperature,top_k", [(0.7, 3), (1.5, 0)])
def test_sample_frequencies_follow_the_tempered_truncated_softmax(rng, temperature, top_k):
  vocab, draws = 6, 40_000
  row = rng.normal(size=vocab) * 1.5
  ids = sample_token(jax.random.key(1), jnp.asarray(np.tile(row, (draws, 1))),
                     temperature=temperature, top_k=top_k)
  frequency = np.bincount(np.asarray(ids), minlength=vocab) / draws
  scaled = row / temperature
  kept = np.argsort(-row)[:top_k] if top_k else np.arange(vocab)
  want = np.zeros(vocab)
  want[kept] = np.exp(scaled[kept] - scaled[kept].max())
  want /= want.sum()
  assert np.all(frequency[want == 0] == 0)
  # 5 standard errors of a frequency from 40,000 draws is at most 0.0125
  np.testing.assert_allclose(frequency, want, atol=0.0125)


def test_bad_sampling_arguments():
  logits, key = jnp.zeros((2, 5)), jax.random.key(0)
  with pytest.raises(ValueError, match="temperature"):
    sample_token(key, logits, temperature=-1.0)
  with pytest.raises(ValueError, match="top_k"):
    sample_token(key, logits, top_k=6)
  with pytest.raises(ValueError, match="logits must be"):
    sample_token(key, jnp.zeros(5))
  with pytest.raises(ValueError, match="num_steps"):
    sample_loop(lambda c, i: (c, logits), 0, jnp.zeros(2, jnp.int32), key, 0)


def test_loop_feeds_tokens_back_and_pads_after_end():
  """A step whose argmax is (previous id + 1) mod 5: row 0 (from 0) draws the end id 3 third
  and is padded after it; row 1 (from 3) would draw it fifth, so num_steps = 4 cuts it."""
  def step(count, ids):
    return count + 1, jax.nn.one_hot((ids + 1) % 5, 5) * 10.0

  ids, lengths = sample_loop(step, 0, jnp.array([0, 3]), jax.random.key(0), 4,
                             temperature=0.0, end_id=3, pad_id=-1)
  np.testing.assert_array_equal(ids, [[1, 2, 3, -1], [4, 0, 1, 2]])
  np.testing.assert_array_equal(lengths, [3, 4])
