"""Padded, shuffled, optionally bucketed batches with a resumable position, built on `grain`.

A batch is a dict of numpy arrays:
  inputs  [batch, time, features] float or [batch, time] int token ids
  targets [batch, time, ...] per step, or [batch, ...] per sequence
  lengths [batch] int32, the true length of each `inputs`
  mask    [batch, time] bool, `t < lengths`
Padding is zeros (token id 0 is the vocabulary's `<pad>`), added per batch up to the longest
sequence in it, rounded up to `pad_multiple` or to the nearest of a few `pad_lengths` (each padded
length is a shape `jax.jit` compiles; `fit_pad_lengths` picks lengths that pad a data set least).

The order of every epoch is a pure function of `(seed, epoch)`, so two runs with the same seed see
the same batches, and `Loader.get_state()` (a small JSON-able dict) restores the position: a
resumed run continues with exactly the batches the original would have produced.
"""

import functools
from typing import Any, Callable, Sequence

import numpy as np

Example = dict[str, Any]
TIME_KEYS = ("inputs", "targets")


def example_lengths(source, transform: Callable[[Example], Example] | None = None) -> np.ndarray:
  """[examples] the length of each (transformed) example's `inputs`."""
  transform = transform or (lambda example: example)
  return np.array([len(transform(source[i])["inputs"]) for i in range(len(source))])


def padded_length(length: int, pad_multiple: int = 1, pad_lengths: Sequence[int] = ()) -> int:
  """The time axis a batch whose longest sequence has `length` steps is padded to: the
  smallest of `pad_lengths` that holds it, else `length` rounded up to `pad_multiple`."""
  fitting = [p for p in pad_lengths if p >= length]
  return min(fitting) if fitting else int(-(-length // pad_multiple) * pad_multiple)


def fit_pad_lengths(lengths: Sequence[int], count: int) -> tuple[int, ...]:
  """The `count` (or fewer) padded lengths that add the fewest padding steps to sequences of
  `lengths` when each is padded to the smallest one that holds it (exact, by dynamic
  programming over the distinct lengths); the longest length is always one of them."""
  if count < 1:
    raise ValueError(f"count must be >= 1, got {count!r}")
  values, counts = np.unique(np.asarray(lengths, np.int64), return_counts=True)
  steps = np.concatenate([[0], np.cumsum(values * counts)])
  seen = np.concatenate([[0], np.cumsum(counts)])
  # best[j]: the least padding of values[..j] with values[j] the longest padded length chosen
  best = seen[1:] * values - steps[1:]
  chosen = [[j] for j in range(len(values))]
  for _ in range(count - 1):
    new_best, new_chosen = best.copy(), list(chosen)
    for j in range(1, len(values)):
      # values[i+1..j] padded to values[j], after the best choice ending at values[i]
      costs = best[:j] + (seen[j + 1] - seen[1:j + 1]) * values[j] - (steps[j + 1] - steps[1:j + 1])
      i = int(np.argmin(costs))
      if costs[i] < new_best[j]:
        new_best[j], new_chosen[j] = costs[i], chosen[i] + [j]
    best, chosen = new_best, new_chosen
  return tuple(int(values[j]) for j in chosen[-1])


def pad_batch(
    examples: Sequence[Example], time_keys: Sequence[str] = TIME_KEYS, pad_multiple: int = 1,
    pad_lengths: Sequence[int] = ()
) -> dict[str, np.ndarray]:
  """Stacks examples, zero-padding the time axis (axis 0) of `time_keys` arrays with ndim >= 1
  to `padded_length` of the longest.

  Each example needs `inputs` with the time axis first; other keys are stacked as they are.
  """
  if not examples:
    raise ValueError("pad_batch: examples must not be empty")
  lengths = np.array([len(e["inputs"]) for e in examples], np.int32)
  time = padded_length(int(lengths.max()), pad_multiple, pad_lengths)
  batch = {}
  for key in examples[0]:
    arrays = [np.asarray(e[key]) for e in examples]
    if key in time_keys and arrays[0].ndim >= 1:
      out = np.zeros((len(arrays), time) + arrays[0].shape[1:], arrays[0].dtype)
      for row, array in enumerate(arrays):
        out[row, : len(array)] = array
      batch[key] = out
    else:
      batch[key] = np.stack(arrays)
  batch["lengths"] = lengths
  batch["mask"] = np.arange(time)[None, :] < lengths[:, None]
  return batch


def epoch_batches(
    num_examples: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    lengths: np.ndarray | None = None,
    bucket_batches: int = 0,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
  """The example indices of each batch of one epoch, a pure function of its arguments.

  With `lengths` [num_examples] and `bucket_batches = k > 0`, each window of k batches of the
  shuffled order is sorted by length before it is cut, and the batches are shuffled again, so
  a batch holds sequences of similar length while the epoch stays random.
  """
  rng = np.random.default_rng((seed, epoch))
  order = rng.permutation(num_examples) if shuffle else np.arange(num_examples)
  if bucket_batches:
    if lengths is None:
      raise ValueError("epoch_batches: bucket_batches needs lengths")
    window = batch_size * bucket_batches
    order = np.concatenate([
        chunk[np.argsort(lengths[chunk], kind="stable")]
        for chunk in np.split(order, range(window, num_examples, window))
    ])
  stop = num_examples - num_examples % batch_size if drop_remainder else num_examples
  batches = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
  if bucket_batches and shuffle:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return batches


class Loader:
  """Iterates padded batches of `transform(source[i])` over a random-access source.

  Args:
    source: anything with `__len__` and `__getitem__` (a TFDS data source, `SyntheticSource`).
    batch_size: examples per batch.
    transform: example dict -> dict with `inputs` (time first) and `targets`; identity if None.
    seed: seed of the shuffling; the order of epoch e depends only on (seed, e).
    shuffle: shuffle within each epoch (False: source order, for evaluation).
    num_epochs: number of passes, or None for endless.
    bucket_batches: if > 0, bucket by length over windows of this many batches.
    drop_remainder: drop each epoch's last, smaller batch.
    pad_multiple: round the padded time axis up to a multiple of this.
    pad_lengths: pad the time axis to the smallest of these lengths that holds the batch (a
      longer batch falls back to `pad_multiple`); see `fit_pad_lengths`.
    num_threads: grain reader threads (0 reads in the calling thread).
  """

  def __init__(
      self,
      source,
      batch_size: int,
      *,
      transform: Callable[[Example], Example] | None = None,
      seed: int = 0,
      shuffle: bool = True,
      num_epochs: int | None = None,
      bucket_batches: int = 0,
      drop_remainder: bool = False,
      pad_multiple: int = 1,
      pad_lengths: Sequence[int] = (),
      time_keys: Sequence[str] = TIME_KEYS,
      num_threads: int = 2,
  ):
    import grain  # pylint: disable=g-import-not-at-top

    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if len(source) < (batch_size if drop_remainder else 1):
      raise ValueError(f"source has {len(source)} examples, too few for batch_size={batch_size}")
    self._source = source
    self._transform = transform or (lambda example: example)
    self._plan = functools.partial(
        epoch_batches, len(source), batch_size, seed=seed, shuffle=shuffle,
        bucket_batches=bucket_batches, drop_remainder=drop_remainder,
        lengths=example_lengths(source, self._transform) if bucket_batches else None,
    )
    self._pad = functools.partial(pad_batch, time_keys=time_keys, pad_multiple=pad_multiple,
                                  pad_lengths=tuple(pad_lengths))
    self._plans = {0: self._plan(epoch=0)}
    self.batches_per_epoch = len(self._plans[0])
    dataset = grain.MapDataset.range(self.batches_per_epoch).repeat(num_epochs)
    dataset = dataset.map_with_index(self._make_batch)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
    self._iterator = iter(dataset.to_iter_dataset(options))



  def _epoch_plan(self, epoch: int) -> list[np.ndarray]:
    # Reader threads may straddle two epochs; keep the plans of the last two.
    plans = self._plans
    if epoch not in plans:
      plans = {e: p for e, p in plans.items() if e == epoch - 1}
      plans[epoch] = self._plan(epoch=epoch)
      self._plans = plans
    return plans[epoch]

  def _make_batch(self, step: int, position: int) -> dict[str, np.ndarray]:
    indices = self._epoch_plan(step // self.batches_per_epoch)[position]
    return self._pad([self._transform(self._source[int(i)]) for i in indices])

  def batch_per_shape(self, epoch: int = 0) -> list[dict[str, np.ndarray]]:
    """The first batch of each shape of `epoch` (to compile a program per shape ahead); the
    loader's position does not move."""
    batches = {}
    for indices in self._epoch_plan(epoch):
      batch = self._pad([self._transform(self._source[int(i)]) for i in indices])
      batches.setdefault(tuple(a.shape for a in batch.values()), batch)
    return list(batches.values())

  def __len__(self) -> int:
    return self.batches_per_epoch

  def __iter__(self) -> "Loader":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iterator)

  def get_state(self) -> dict[str, Any]:
    """The position, as a JSON-able dict to save with a checkpoint."""
    return self._iterator.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    """Restores a position saved by `get_state` (on a loader built with the same arguments)."""
    self._iterator.set_state(state)
