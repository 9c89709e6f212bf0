"""Synthetic long-range tasks, generated deterministically from a seed.

Three classic tests of long-term memory, each with the sequence length as a parameter and the
loss of its trivial (memoryless) baseline:

- `adding_problem`: Hochreiter & Schmidhuber (1997), in the form of Le et al. (2015) and
  Arjovsky et al. (2016). Inputs `[time, 2]`: a value in U(0, 1) and a marker that is 1 at two
  steps (one in each half); the target is the sum of the two marked values. Always predicting the
  mean (1.0) gives MSE = Var(U1 + U2) = 1/6 ~ 0.167.
- `temporal_order_problem`: Hochreiter & Schmidhuber (1997), experiment 6a/6b. A stream of
  distractor symbols {a, b, c, d}, framed by B ... E, carries 2 (or 3) relevant symbols from
  {X, Y} at fixed windows; the class is their order (XX, XY, YX, YY, ...). Inputs are token ids
  `[time]` over 8 symbols; the target is one class id; chance gives cross-entropy ln(2**k).
- `copy_problem`: Arjovsky et al. (2016). Ten symbols from 8, then `length - 1` blanks, a
  delimiter and ten more blanks; the target is blanks and then the ten symbols, so inputs and
  targets are token ids `[length + 20]`. Predicting blanks and then the uniform distribution over
  the 8 symbols gives cross-entropy 10 ln 8 / (length + 20) per step.

Each `*_problem(rng, batch, length)` returns a dict of numpy arrays with a leading batch axis.
`SyntheticSource` makes any of them a random-access data source whose example `i` is a pure
function of `(seed, i)`, so the loader's shuffling, resumption and sharding apply unchanged.
"""

import dataclasses
import math
from typing import Any, Callable

import numpy as np

# Token ids of the temporal order problem (one-hot width 8).
ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
# Token ids of the copy problem: 0 blank, 1..8 the symbols, 9 the delimiter.
COPY_BLANK, COPY_DELIMITER, COPY_NUM_SYMBOLS, COPY_SPAN = 0, 9, 8, 10


def _check_length(length: int, minimum: int, task: str) -> None:
  if not isinstance(length, (int, np.integer)) or length < minimum:
    raise ValueError(f"{task}: length must be an integer >= {minimum}, got {length!r}")


def adding_problem(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
  """Adding problem: `inputs [batch, length, 2]` float32, `targets [batch]` float32."""
  _check_length(length, 2, "adding_problem")
  values = rng.uniform(0.0, 1.0, size=(batch, length))
  half = length // 2
  first = rng.integers(0, half, size=batch)
  second = rng.integers(half, length, size=batch)
  markers = np.zeros((batch, length))
  rows = np.arange(batch)
  markers[rows, first] = 1.0
  markers[rows, second] = 1.0
  targets = values[rows, first] + values[rows, second]
  inputs = np.stack([values, markers], axis=-1)
  return {"inputs": inputs.astype(np.float32), "targets": targets.astype(np.float32)}


def temporal_order_problem(
    rng: np.random.Generator, batch: int, length: int, num_relevant: int = 2
) -> dict[str, np.ndarray]:
  """Temporal order problem: `inputs [batch, length]` int32 ids, `targets [batch]` int32.

  The relevant symbols sit at random steps in the windows [0.1, 0.2), [0.3, 0.4) (3-symbol
  variant only) and [0.5, 0.6) of the sequence, as in the paper's T = 100 setting; the class id
  reads their X/Y pattern as a binary number (X = 0, Y = 1, first symbol most significant).
  """
  if num_relevant not in (2, 3):
    raise ValueError(f"temporal_order_problem: num_relevant must be 2 or 3, got {num_relevant!r}")
  _check_length(length, 20, "temporal_order_problem")
  ids = rng.integers(0, 4, size=(batch, length))  # distractors a..d
  ids[:, 0], ids[:, -1] = ORDER_SYMBOLS.index("B"), ORDER_SYMBOLS.index("E")
  windows = [(0.1, 0.2), (0.5, 0.6)] if num_relevant == 2 else [(0.1, 0.2), (0.3, 0.4), (0.5, 0.6)]
  bits = rng.integers(0, 2, size=(batch, num_relevant))
  rows = np.arange(batch)
  for k, (lo, hi) in enumerate(windows):
    start, stop = max(1, int(lo * length)), max(2, int(hi * length))
    ids[rows, rng.integers(start, stop, size=batch)] = ORDER_SYMBOLS.index("X") + bits[:, k]
  targets = bits @ (2 ** np.arange(num_relevant - 1, -1, -1))
  return {"inputs": ids.astype(np.int32), "targets": targets.astype(np.int32)}


def copy_problem(rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
  """Copy problem: `inputs`, `targets [batch, length + 20]` int32 ids (see module docstring)."""
  _check_length(length, 1, "copy_problem")
  total = length + 2 * COPY_SPAN
  symbols = rng.integers(1, COPY_NUM_SYMBOLS + 1, size=(batch, COPY_SPAN))
  inputs = np.full((batch, total), COPY_BLANK)
  inputs[:, :COPY_SPAN] = symbols
  inputs[:, COPY_SPAN + length - 1] = COPY_DELIMITER
  targets = np.full((batch, total), COPY_BLANK)
  targets[:, -COPY_SPAN:] = symbols
  return {"inputs": inputs.astype(np.int32), "targets": targets.astype(np.int32)}


def adding_baseline() -> float:
  """MSE of always predicting E[target] = 1: Var(U1 + U2) = 2/12."""
  return 1.0 / 6.0


def temporal_order_baseline(num_relevant: int = 2) -> float:
  """Cross-entropy (nats) of predicting the uniform distribution over the 2**k classes."""
  return num_relevant * math.log(2.0)


def copy_baseline(length: int) -> float:
  """Cross-entropy (nats per step) of the best memoryless copy strategy: 10 ln 8 / (T + 20)."""
  return COPY_SPAN * math.log(COPY_NUM_SYMBOLS) / (length + 2 * COPY_SPAN)


TASKS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "adding": adding_problem,
    "temporal_order": temporal_order_problem,
    "copy": copy_problem,
}


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
  """Random-access source of `size` examples of a synthetic task; example i is fixed by (seed, i).

  Attributes:
    task: one of `TASKS` ("adding", "temporal_order", "copy").
    length: the task's sequence length parameter T.
    size: number of examples (the source's `len`).
    seed: integer seed; different splits should use different seeds.
    options: extra keyword arguments of the task (e.g. `{"num_relevant": 3}`).
  """

  task: str
  length: int
  size: int
  seed: int = 0
  options: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
    if self.size < 1:
      raise ValueError(f"size must be >= 1, got {self.size!r}")
    self.batch(0, 1)  # validate length and options now, not at the first read

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.size:
      raise IndexError(f"index {index} out of range for a source of size {self.size}")
    return {k: v[0] for k, v in self.batch(index, 1).items()}

  def batch(self, index: int, count: int) -> dict[str, np.ndarray]:
    """Examples index..index+count-1 at once (each still from its own (seed, i) generator)."""
    parts = [
        TASKS[self.task](np.random.default_rng((self.seed, i)), 1, self.length, **self.options)
        for i in range(index, index + count)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
