"""Padding, epoch plans, bucketing, determinism and resumption of `Loader`."""

import itertools
import json

import numpy as np
import pytest

from rnn_research.data import batching, synthetic, transforms


class _VariableLengths:
  """Source of `count` examples with lengths 1..max_length; inputs [T, 3], targets [T]."""

  def __init__(self, count=37, max_length=20):
    rng = np.random.default_rng(0)
    self.lengths = rng.integers(1, max_length + 1, size=count)

  def __len__(self):
    return len(self.lengths)

  def __getitem__(self, i):
    t = int(self.lengths[i])
    return {"inputs": np.full((t, 3), i + 1, np.float32), "targets": np.arange(t) + 1, "index": i}


def test_pad_batch_pads_with_zeros_and_masks():
  source = _VariableLengths()
  batch = batching.pad_batch([source[i] for i in range(5)])
  lengths = source.lengths[:5]
  time = lengths.max()
  assert batch["inputs"].shape == (5, time, 3) and batch["targets"].shape == (5, time)
  np.testing.assert_array_equal(batch["lengths"], lengths)
  np.testing.assert_array_equal(batch["mask"].sum(1), lengths)
  for row, length in enumerate(lengths):
    assert (batch["inputs"][row, :length] == row + 1).all()
    assert (batch["inputs"][row, length:] == 0).all() and (batch["targets"][row, length:] == 0).all()
  np.testing.assert_array_equal(batch["index"], np.arange(5))  # per-sequence values are stacked


def test_pad_batch_keeps_per_sequence_targets_and_rounds_time():
  examples = [synthetic.SyntheticSource("adding", length=12, size=4)[i] for i in range(4)]
  batch = batching.pad_batch(examples, pad_multiple=8)
  assert batch["inputs"].shape == (4, 16, 2) and batch["targets"].shape == (4,)
  assert batch["mask"].sum() == 4 * 12
  with pytest.raises(ValueError, match="examples must not be empty"):
    batching.pad_batch([])


def _padding(lengths, pad_lengths):
  return sum(batching.padded_length(n, pad_lengths=pad_lengths) - n for n in lengths)


def test_fitted_pad_lengths_pad_least():
  """The fitted lengths add no more padding than any other choice of as many lengths from the
  data (checked exhaustively), always include the longest, and pad each batch to the smallest
  one that holds it."""
  rng = np.random.default_rng(3)
  for count in (1, 2, 3):
    lengths = rng.integers(5, 40, size=30)
    fitted = batching.fit_pad_lengths(lengths, count)
    assert len(fitted) == count and max(fitted) == lengths.max() and list(fitted) == sorted(fitted)
    candidates = [c + (int(lengths.max()),) for c in
                  itertools.combinations(sorted(set(lengths.tolist()) - {lengths.max()}), count - 1)]
    assert _padding(lengths, fitted) == min(_padding(lengths, c) for c in candidates)
  assert batching.fit_pad_lengths([4, 4, 9], 5) == (4, 9)  # no more lengths than there are
  assert batching.padded_length(5, 16, (6, 12)) == 6
  assert batching.padded_length(13, 16, (6, 12)) == 16  # longer than all: pad_multiple
  with pytest.raises(ValueError, match="count must be >= 1"):
    batching.fit_pad_lengths([3], 0)


def test_loader_pads_to_the_given_lengths_and_lists_its_shapes():
  source = _VariableLengths()
  loader = batching.Loader(source, 1, seed=0, pad_lengths=(6, 12, 20))
  shapes = [b["inputs"].shape for b in loader.batch_per_shape()]
  assert sorted(shapes) == [(1, 6, 3), (1, 12, 3), (1, 20, 3)]
  first = [next(loader) for _ in range(loader.batches_per_epoch)]  # the position did not move
  assert {b["inputs"].shape[1] for b in first} == {6, 12, 20}
  for b in first:
    assert b["inputs"].shape[1] == batching.padded_length(int(b["lengths"][0]),
                                                           pad_lengths=(6, 12, 20))
  plan = batching.epoch_batches(len(source), 1, seed=0, epoch=0)
  np.testing.assert_array_equal([b["index"][0] for b in first], np.concatenate(plan))


def test_epoch_plan_is_a_partition_fixed_by_seed_and_epoch():
  plan = batching.epoch_batches(37, 8, seed=1, epoch=0)
  assert [len(b) for b in plan] == [8, 8, 8, 8, 5]
  np.testing.assert_array_equal(np.sort(np.concatenate(plan)), np.arange(37))
  again = batching.epoch_batches(37, 8, seed=1, epoch=0)
  assert all(np.array_equal(a, b) for a, b in zip(plan, again))
  next_epoch = batching.epoch_batches(37, 8, seed=1, epoch=1)
  assert not np.array_equal(np.concatenate(plan), np.concatenate(next_epoch))
  dropped = batching.epoch_batches(37, 8, seed=1, epoch=0, drop_remainder=True)
  assert [len(b) for b in dropped] == [8, 8, 8, 8]
  ordered = batching.epoch_batches(37, 8, seed=1, epoch=0, shuffle=False)
  np.testing.assert_array_equal(np.concatenate(ordered), np.arange(37))


def test_bucketing_reduces_padding_and_keeps_every_example():
  lengths = np.random.default_rng(0).integers(1, 200, size=400)

  def padded_steps(plan):
    return sum(len(b) * lengths[b].max() for b in plan)

  plain = batching.epoch_batches(400, 16, seed=0, epoch=0)
  bucketed = batching.epoch_batches(400, 16, seed=0, epoch=0, lengths=lengths, bucket_batches=5)
  np.testing.assert_array_equal(np.sort(np.concatenate(bucketed)), np.arange(400))
  assert padded_steps(bucketed) < 0.8 * padded_steps(plain)
  with pytest.raises(ValueError, match="bucket_batches needs lengths"):
    batching.epoch_batches(400, 16, seed=0, epoch=0, bucket_batches=5)


def _take(loader, n):
  return list(itertools.islice(loader, n))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("num_threads", [0, 2])
def test_loader_is_deterministic_and_covers_each_epoch(num_threads):
  source = _VariableLengths()
  loader = batching.Loader(source, 8, seed=5, num_threads=num_threads)
  assert len(loader) == 5
  first = _take(loader, 10)
  _assert_same_batches(first, _take(batching.Loader(source, 8, seed=5), 10))
  for epoch in (first[:5], first[5:]):
    np.testing.assert_array_equal(np.sort(np.concatenate([b["index"] for b in epoch])), np.arange(37))
  other = _take(batching.Loader(source, 8, seed=6), 5)
  assert not all(np.array_equal(a["index"], b["index"]) for a, b in zip(first, other))


def test_loader_resumes_from_saved_state_across_epochs():
  source = _VariableLengths()
  kwargs = dict(seed=2, bucket_batches=2, transform=lambda e: {k: e[k] for k in ("inputs", "targets")})
  original = batching.Loader(source, 6, **kwargs)
  _take(original, 4)
  state = json.loads(json.dumps(original.get_state()))  # as it would be saved with a checkpoint
  expected = _take(original, 12)  # crosses the epoch boundary (7 batches per epoch)
  resumed = batching.Loader(source, 6, **kwargs)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 12), expected)


def test_loader_stops_after_num_epochs_and_checks_arguments():
  source = _VariableLengths(count=10)
  loader = batching.Loader(source, 4, num_epochs=2, drop_remainder=True, shuffle=False)
  batches = list(loader)
  assert len(batches) == 4 and all(b["inputs"].shape[0] == 4 for b in batches)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    batching.Loader(source, 0)
  with pytest.raises(ValueError, match="too few for batch_size=11"):
    batching.Loader(source, 11, drop_remainder=True)


def test_loader_over_piano_rolls_shifts_inputs_by_one_frame():
  rng = np.random.default_rng(0)
  rolls = [{"roll": (rng.random((t, 88)) < 0.05).astype(np.uint8)} for t in (5, 9, 7)]
  batch = next(batching.Loader(rolls, 3, transform=transforms.piano_roll_next_step, shuffle=False))
  assert batch["inputs"].shape == (3, 9, 88) and batch["inputs"].dtype == np.float32
  for row, example in enumerate(rolls):
    t = len(example["roll"])
    np.testing.assert_array_equal(batch["targets"][row, :t], example["roll"])
    np.testing.assert_array_equal(batch["inputs"][row, 1:t], example["roll"][:-1])
    assert (batch["inputs"][row, 0] == 0).all()
