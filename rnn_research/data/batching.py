"""Padded, shuffled, optionally bucketed batches with a resumable position, built on `grain`.

A batch is a dict of numpy arrays:
  inputs  [batch, time, features] float or [batch, time] int token ids
  targets [batch, time, ...] per step, or [batch, ...] per sequence
  lengths [batch] int32, the true length of each `inputs`
  mask    [batch, time] bool, `t < lengths`
Padding is zeros (token id 0 is the vocabulary's `<pad>`), added per batch up to the longest
sequence in it (optionally rounded up to `pad_multiple`, to bound the number of shapes that
`jax.jit` compiles).

The order of every epoch is a pure function of `(seed, epoch)`, so two runs with the same seed see
the same batches, and `Loader.get_state()` (a small JSON-able dict) restores the position: a
resumed run continues with exactly the batches the original would have produced.
"""

import functools
from typing import Any, Callable, Sequence

import numpy as np

Example = dict[str, Any]
TIME_KEYS = ("inputs", "targets")


def pad_batch(
    examples: Sequence[Example], time_keys: Sequence[str] = TIME_KEYS, pad_multiple: int = 1
) -> dict[str, np.ndarray]:
  """Stacks examples, zero-padding the time axis (axis 0) of `time_keys` arrays with ndim >= 1.

  Each example needs `inputs` with the time axis first; other keys are stacked as they are.
  """
  if not examples:
    raise ValueError("pad_batch: examples must not be empty")
  lengths = np.array([len(e["inputs"]) for e in examples], np.int32)
  time = int(-(-lengths.max() // pad_multiple) * pad_multiple)
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
        lengths=self._lengths() if bucket_batches else None,
    )
    self._pad = functools.partial(pad_batch, time_keys=time_keys, pad_multiple=pad_multiple)
    self._plans = {0: self._plan(epoch=0)}
    self.batches_per_epoch = len(self._plans[0])
    dataset = grain.MapDataset.range(self.batches_per_epoch).repeat(num_epochs)
    dataset = dataset.map_with_index(self._make_batch)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
    self._iterator = iter(dataset.to_iter_dataset(options))

  def _lengths(self) -> np.ndarray:
    return np.array([len(self._transform(self._source[i])["inputs"]) for i in range(len(self._source))])

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
