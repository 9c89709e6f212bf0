"""Synthetic long-range tasks: structure, determinism and the trivial baselines."""

import math

import numpy as np
import pytest

from rnn_research.data import synthetic


def _rng(seed=0):
  return np.random.default_rng(seed)


@pytest.mark.parametrize("length", [10, 101])
def test_adding_structure(length):
  batch = synthetic.adding_problem(_rng(), 64, length)
  x, y = batch["inputs"], batch["targets"]
  assert x.shape == (64, length, 2) and y.shape == (64,)
  assert x.dtype == np.float32 and y.dtype == np.float32
  markers = x[..., 1]
  np.testing.assert_array_equal(markers.sum(1), 2.0)
  half = length // 2
  np.testing.assert_array_equal(markers[:, :half].sum(1), 1.0)  # one marker in each half
  np.testing.assert_allclose(y, (x[..., 0] * markers).sum(1), rtol=1e-6)
  assert x[..., 0].min() >= 0.0 and x[..., 0].max() <= 1.0


def test_adding_mean_predictor_matches_baseline():
  y = synthetic.adding_problem(_rng(1), 40_000, 50)["targets"]
  mse = float(np.mean((y - 1.0) ** 2))
  assert abs(mse - synthetic.adding_baseline()) < 0.005
  assert abs(synthetic.adding_baseline() - 0.167) < 0.001


@pytest.mark.parametrize("num_relevant", [2, 3])
def test_temporal_order_structure_and_baseline(num_relevant):
  length = 100
  batch = synthetic.temporal_order_problem(_rng(2), 20_000, length, num_relevant)
  ids, y = batch["inputs"], batch["targets"]
  assert ids.shape == (20_000, length) and y.shape == (20_000,)
  symbols = synthetic.ORDER_SYMBOLS
  assert (ids[:, 0] == symbols.index("B")).all() and (ids[:, -1] == symbols.index("E")).all()
  relevant = ids >= symbols.index("X")
  relevant[:, [0, -1]] = False
  assert (relevant.sum(1) == num_relevant).all()
  # The class is the X/Y pattern read in time order.
  bits = (ids[relevant].reshape(-1, num_relevant) - symbols.index("X"))
  np.testing.assert_array_equal(bits @ (2 ** np.arange(num_relevant)[::-1]), y)
  first, last = relevant.argmax(1), length - 1 - relevant[:, ::-1].argmax(1)
  assert first.min() >= 10 and first.max() < 20 and last.min() >= 50 and last.max() < 60
  # Chance cross-entropy of the empirical class distribution is the baseline.
  freq = np.bincount(y, minlength=2**num_relevant) / len(y)
  entropy = -float(np.sum(freq * np.log(freq)))
  assert abs(entropy - synthetic.temporal_order_baseline(num_relevant)) < 0.01


@pytest.mark.parametrize("length", [1, 100])
def test_copy_structure_and_baseline(length):
  batch = synthetic.copy_problem(_rng(3), 20_000, length)
  x, y = batch["inputs"], batch["targets"]
  total = length + 20
  assert x.shape == y.shape == (20_000, total)
  np.testing.assert_array_equal(y[:, -10:], x[:, :10])
  assert (y[:, :-10] == synthetic.COPY_BLANK).all()
  assert (x[:, length + 9] == synthetic.COPY_DELIMITER).all()
  assert (x[:, 10 : length + 9] == synthetic.COPY_BLANK).all()
  assert x[:, :10].min() >= 1 and x[:, :10].max() <= 8
  # Best memoryless predictor: the empirical distribution of the target at each step.
  ce = 0.0
  for t in range(total):
    freq = np.bincount(y[:, t]) / len(y)
    freq = freq[freq > 0]
    ce -= float(np.sum(freq * np.log(freq)))
  assert abs(ce / total - synthetic.copy_baseline(length)) < 0.01
  assert synthetic.copy_baseline(length) == pytest.approx(10 * math.log(8) / (length + 20))


def test_generators_are_deterministic_per_seed():
  for task in synthetic.TASKS.values():
    a, b = task(_rng(7), 8, 30), task(_rng(7), 8, 30)
    c = task(_rng(8), 8, 30)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_source_examples_depend_only_on_seed_and_index():
  source = synthetic.SyntheticSource("copy", length=20, size=50, seed=3)
  assert len(source) == 50
  again = synthetic.SyntheticSource("copy", length=20, size=10, seed=3)
  np.testing.assert_array_equal(source[7]["inputs"], again[7]["inputs"])
  np.testing.assert_array_equal(source.batch(5, 3)["targets"][2], source[7]["targets"])
  other = synthetic.SyntheticSource("copy", length=20, size=50, seed=4)
  assert not np.array_equal(source[7]["inputs"], other[7]["inputs"])
  with pytest.raises(IndexError):
    source[50]


def test_bad_arguments_name_themselves():
  with pytest.raises(ValueError, match="task must be one of .*adding.*copy.*temporal_order"):
    synthetic.SyntheticSource("addition", length=10, size=5)
  with pytest.raises(ValueError, match="length must be an integer >= 2"):
    synthetic.SyntheticSource("adding", length=1, size=5)
  with pytest.raises(ValueError, match="num_relevant must be 2 or 3"):
    synthetic.SyntheticSource("temporal_order", length=100, size=5, options={"num_relevant": 4})
  with pytest.raises(ValueError, match="size must be >= 1"):
    synthetic.SyntheticSource("copy", length=10, size=0)
