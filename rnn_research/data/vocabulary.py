"""Character vocabulary with reserved padding, start, end and unknown symbols.

Ids 0..3 are `<pad>`, `<start>`, `<end>`, `<unk>`; characters follow in sorted order. Padding is 0
so that zero-padded batches need no remapping. A vocabulary is saved as a JSON list of its
characters (the reserved symbols are implied), e.g. in a TFDS dataset's metadata.
"""

import json
import os
from typing import Iterable

import numpy as np

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
RESERVED = (PAD, START, END, UNK)


class Vocabulary:
  """Maps characters to ids and back. `len(vocab)` counts the reserved symbols."""

  def __init__(self, characters: Iterable[str]):
    characters = list(characters)
    bad = [c for c in characters if not isinstance(c, str) or len(c) != 1]
    if bad:
      raise ValueError(f"characters must be single-character strings, got {bad[:5]!r}")
    if len(set(characters)) != len(characters):
      raise ValueError("characters must not repeat")
    self.characters = characters
    self.symbols = list(RESERVED) + characters
    self._ids = {c: i for i, c in enumerate(self.symbols)}

  @classmethod
  def from_texts(cls, texts: Iterable[str]) -> "Vocabulary":
    """The sorted set of characters occurring in `texts`."""
    seen = set()
    for text in texts:
      seen.update(text)
    return cls(sorted(seen))

  def __len__(self) -> int:
    return len(self.symbols)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocabulary) and self.characters == other.characters

  @property
  def pad_id(self) -> int:
    return self._ids[PAD]

  @property
  def start_id(self) -> int:
    return self._ids[START]

  @property
  def end_id(self) -> int:
    return self._ids[END]

  @property
  def unk_id(self) -> int:
    return self._ids[UNK]

  def encode(self, text: str, add_start: bool = False, add_end: bool = False) -> np.ndarray:
    """Ids `[len(text) (+1 per added symbol)]` int32; unseen characters map to `<unk>`."""
    ids = [self._ids.get(c, self.unk_id) for c in text]
    ids = [self.start_id] * add_start + ids + [self.end_id] * add_end
    return np.asarray(ids, np.int32)

  def decode(self, ids: Iterable[int], stop_at_end: bool = True) -> str:
    """Text of `ids`, dropping padding and start symbols and stopping at `<end>`."""
    out = []
    for i in np.asarray(ids).tolist():
      if i == self.end_id and stop_at_end:
        break
      if i not in (self.pad_id, self.start_id, self.end_id):
        out.append(self.symbols[i] if 0 <= i < len(self.symbols) else UNK)
    return "".join(out)

  def to_json(self) -> str:
    return json.dumps(self.characters, ensure_ascii=False)

  @classmethod
  def from_json(cls, text: str) -> "Vocabulary":
    try:
      characters = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"vocabulary is not valid JSON: {e}") from e
    if not isinstance(characters, list):
      raise ValueError(f"vocabulary JSON must be a list of characters, got {type(characters).__name__}")
    return cls(characters)

  def save(self, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
      f.write(self.to_json())

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Vocabulary":
    if not os.path.exists(path):
      raise FileNotFoundError(f"vocabulary file {os.fspath(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
      return cls.from_json(f.read())
