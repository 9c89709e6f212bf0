"""JSB Chorales from the Bach chorales in `music21`'s corpus (no download).

`music21.corpus.getComposer("bach")` lists 433 files; the 368 scores with exactly four parts are
the SATB chorales (the rest carry instrumental parts or are Roman-numeral analyses). Each is
sampled at every quarter-note beat t = 0, 1, 2, ...: a key is on in frame t if a note sounds at
that instant (onset <= t < onset + duration), so at most four keys are on, as in the standard set.
The split is fixed by catalogue number (BWV): chorales sorted by BWV number are dealt in turn to
the split furthest below its share of the standard 229/76/77 proportions, which spreads every
split evenly over the catalogue.
"""

import math
import os
import re
from typing import Iterator

import numpy as np

from rnn_research.data.piano_roll import LOWEST_MIDI, NUM_KEYS

STANDARD_COUNTS = {"train": 229, "validation": 76, "test": 77}
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")


def corpus_paths() -> list[str]:
  """Paths of the Bach scores in music21's corpus (Roman-numeral analyses excluded)."""
  from music21 import corpus  # pylint: disable=g-import-not-at-top

  return sorted(str(p) for p in corpus.getComposer("bach") if p.suffix in _SCORE_SUFFIXES)


def catalogue_number(path: str) -> tuple[int, ...]:
  """`.../bwv248.12-2.mxl` -> (248, 12, 2): the BWV number as a sortable tuple."""
  numbers = re.findall(r"\d+", os.path.splitext(os.path.basename(path))[0])
  if not numbers:
    raise ValueError(f"no catalogue number in the file name of {path!r}")
  return tuple(int(n) for n in numbers)


def score_roll(score) -> np.ndarray:
  """A music21 score -> `uint8 [frames, 88]`, the keys sounding at each quarter-note beat."""
  num_frames = math.ceil(float(score.highestTime))
  roll = np.zeros((num_frames, NUM_KEYS), np.uint8)
  for part in score.parts:
    for note in part.flatten().notes:
      onset = float(note.offset)
      beats = range(math.ceil(onset), math.ceil(onset + float(note.quarterLength)))
      for pitch in note.pitches:
        roll[beats.start : beats.stop, pitch.midi - LOWEST_MIDI] = 1
  return roll


def chorale_rolls(paths: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
  """Yields `(file name, roll)` for the four-part scores among `paths` (default: the corpus)."""
  from music21 import converter  # pylint: disable=g-import-not-at-top

  for path in corpus_paths() if paths is None else paths:
    # forceSource: parse the file itself, without writing music21's pickle cache (slow, and
    # outside the data dir).
    score = converter.parse(path, forceSource=True)
    if len(score.parts) == 4:
      yield os.path.basename(path), score_roll(score)


def assign_splits(names: list[str], counts: dict[str, int] = STANDARD_COUNTS) -> dict[str, str]:
  """Maps each name to a split, dealing names in catalogue order in the proportions `counts`."""
  total = sum(counts.values())
  assigned = {split: 0 for split in counts}
  out = {}
  for i, name in enumerate(sorted(names, key=catalogue_number)):
    # The split whose count lags its share of the first i + 1 items the most; ties go to the
    # larger split, then to the order of `counts`.
    split = max(counts, key=lambda s: ((i + 1) * counts[s] / total - assigned[s], counts[s]))
    assigned[split] += 1
    out[name] = split
  return out
