"""Generated string-to-string tasks whose answers are checkable, for sequence-to-sequence models.

- "reverse": a random string of the letters a-j -> the string reversed.
- "sort": a random string of the letters a-j -> its letters in sorted order.
- "add": two random decimal numbers "a+b" -> their sum, "a+b" -> str(a + b).

`StringSource(task, size, seed, min_length, max_length)` is a random-access source whose example
i is `{"source": str, "target": str}`, a pure function of (seed, i); `min_length`/`max_length`
bound the string (reverse, sort) or each number's digits (add). All tasks share `VOCABULARY`.
"""
import dataclasses

import numpy as np

from rnn_research.data.vocabulary import Vocabulary

LETTERS = "abcdefghij"
VOCABULARY = Vocabulary(sorted("0123456789+" + LETTERS))
TASKS = ("reverse", "sort", "add")


def make_pair(task: str, rng: np.random.Generator, min_length: int, max_length: int):
  """One (source, target) pair of `task`."""
  if task == "add":
    a, b = (int("".join(map(str, [rng.integers(1, 10)] + list(rng.integers(0, 10, n - 1)))))
            for n in rng.integers(min_length, max_length + 1, size=2))
    return f"{a}+{b}", str(a + b)
  text = "".join(rng.choice(list(LETTERS), size=rng.integers(min_length, max_length + 1)))
  return text, text[::-1] if task == "reverse" else "".join(sorted(text))


@dataclasses.dataclass(frozen=True)
class StringSource:
  """`size` examples of `task`, example i fixed by (seed, i) (see module docstring)."""
  task: str
  size: int
  seed: int = 0
  min_length: int = 1
  max_length: int = 8

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
    if self.size < 1:
      raise ValueError(f"size must be >= 1, got {self.size!r}")
    if not 1 <= self.min_length <= self.max_length:
      raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length} and "
                       f"{self.max_length}")

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, str]:
    if not 0 <= index < self.size:
      raise IndexError(f"index {index} out of range for a source of size {self.size}")
    source, target = make_pair(self.task, np.random.default_rng((self.seed, index)),
                               self.min_length, self.max_length)
    return {"source": source, "target": target}


def seq2seq_example(vocab: Vocabulary, source_key: str = "source", target_key: str = "target"):
  """`{source, target}` strings -> inputs (source ids), targets (target ids then `<end>`) and
  `source_lengths` (the source's length).

  `data.Loader` pads every time key of a batch to the longest `inputs`, so both id arrays are
  zero-padded here to the longer of the two; the source's true length travels separately.
  """

  def transform(example: dict) -> dict:
    source = vocab.encode(str(example[source_key]))
    target = vocab.encode(str(example[target_key]), add_end=True)
    width = max(len(source), len(target))
    pad = lambda ids: np.pad(ids, (0, width - len(ids)))
    return {"inputs": pad(source), "targets": pad(target),
            "source_lengths": np.int32(len(source))}

  return transform
