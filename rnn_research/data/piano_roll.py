"""Polyphonic music as 88-key binary piano rolls: the Boulanger-Lewandowski (2012) files, and
the statistics and frequency baseline that the reproduction tests check.

A roll is `uint8 [time, 88]`, column k for MIDI note 21 + k (A0..C8). Two file forms are read:
- `.pickle`: `{"train"|"valid"|"test": [sequence]}`, a sequence a list of frames, a frame a
  list/tuple of MIDI note numbers (the original files of JSB Chorales, Nottingham, MuseData and
  Piano-midi.de);
- `.mat`: `traindata`, `validdata`, `testdata`, each a 1 x N cell array of `[time, 88]` uint8.
Splits are named `train`, `validation`, `test`.
"""

import math
import os
import pickle
from typing import Sequence

import numpy as np

NUM_KEYS = 88
LOWEST_MIDI = 21
SPLITS = ("train", "validation", "test")
_PICKLE_KEYS = {"train": "train", "validation": "valid", "test": "test"}
_MAT_KEYS = {"train": "traindata", "validation": "validdata", "test": "testdata"}
FILE_HELP = (
    "a Boulanger-Lewandowski polyphonic music file: the original .pickle (e.g. JSB Chorales.pickle,"
    " from http://www-etud.iro.umontreal.ca/~boulanni/icml2012) or its .mat form (e.g."
    " JSB_Chorales.mat with traindata/validdata/testdata)"
)


def roll_from_notes(frames: Sequence[Sequence[int]], where: str = "sequence") -> np.ndarray:
  """Frames of MIDI note numbers -> `uint8 [len(frames), 88]`."""
  roll = np.zeros((len(frames), NUM_KEYS), np.uint8)
  for t, notes in enumerate(frames):
    for note in notes:
      key = int(note) - LOWEST_MIDI
      if not 0 <= key < NUM_KEYS:
        raise ValueError(f"{where}, frame {t}: MIDI note {note} is outside the piano range 21..108")
      roll[t, key] = 1
  return roll


def _read_pickle(path: str) -> dict[str, list[np.ndarray]]:
  try:
    with open(path, "rb") as f:
      data = pickle.load(f, encoding="latin1")  # the originals were written by Python 2
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
    raise ValueError(f"{path!r} is not a readable pickle ({e}); expected {FILE_HELP}") from e
  if not isinstance(data, dict) or not set(_PICKLE_KEYS.values()) <= set(data):
    found = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path!r} must hold a dict with keys train/valid/test, found {found}")
  return {
      split: [roll_from_notes(seq, f"{path}: {key}[{i}]") for i, seq in enumerate(data[key])]
      for split, key in _PICKLE_KEYS.items()
  }


def _read_mat(path: str) -> dict[str, list[np.ndarray]]:
  import scipy.io  # pylint: disable=g-import-not-at-top

  try:
    data = scipy.io.loadmat(path)
  except (ValueError, TypeError, OSError, NotImplementedError) as e:
    raise ValueError(f"{path!r} is not a readable MATLAB file ({e}); expected {FILE_HELP}") from e
  missing = [key for key in _MAT_KEYS.values() if key not in data]
  if missing:
    found = sorted(k for k in data if not k.startswith("__"))
    raise ValueError(f"{path!r} lacks {missing}; found {found}; expected {FILE_HELP}")
  out = {}
  for split, key in _MAT_KEYS.items():
    rolls = [np.asarray(r) for r in np.asarray(data[key], dtype=object).ravel()]
    for i, roll in enumerate(rolls):
      if roll.ndim != 2 or roll.shape[1] != NUM_KEYS or not np.isin(roll, (0, 1)).all():
        raise ValueError(f"{path!r}: {key}[{i}] must be a binary [time, 88] roll, got {roll.shape}")
    out[split] = [r.astype(np.uint8) for r in rolls]
  return out


def require_file(path: str | os.PathLike) -> str:
  """`path` as a string, or FileNotFoundError saying what belongs there."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"path {path!r} does not exist; expected {FILE_HELP}")
  return path


def read_polyphonic_file(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
  """Reads a `.pickle` or `.mat` file into `{"train"|"validation"|"test": [uint8 [T, 88]]}`."""
  path = require_file(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".mat":
    return _read_mat(path)
  if suffix in (".pickle", ".pkl"):
    return _read_pickle(path)
  raise ValueError(f"path {path!r} must end in .pickle or .mat; expected {FILE_HELP}")


def frequency_model_nll(train: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
  """NLL in nats per frame (summed over the 88 keys) of independent per-key Bernoulli units
  whose probabilities are the training frequencies, add-one (Laplace) smoothed."""
  frames = np.concatenate(train).astype(np.float64)
  p = (frames.sum(0) + 1.0) / (len(frames) + 2.0)
  test_frames = np.concatenate(test).astype(np.float64)
  log_lik = test_frames @ np.log(p) + (1.0 - test_frames) @ np.log1p(-p)
  return float(-log_lik.mean())


def uniform_nll() -> float:
  """NLL per frame of predicting 0.5 for every key: 88 ln 2."""
  return NUM_KEYS * math.log(2.0)


def roll_statistics(splits: dict[str, Sequence[np.ndarray]]) -> dict[str, float]:
  """Counts, lengths, keys on per frame and the frequency-model NLL on test (and validation)."""
  frames = np.concatenate([r for rolls in splits.values() for r in rolls])
  on = frames.sum(1)
  stats = {f"num_{split}": len(rolls) for split, rolls in splits.items()}
  stats.update(
      mean_length=float(np.mean([len(r) for rolls in splits.values() for r in rolls])),
      max_keys_on=int(on.max()),
      mean_keys_on=float(on.mean()),
      frequency_nll_test=frequency_model_nll(splits["train"], splits["test"]),
      frequency_nll_validation=frequency_model_nll(splits["train"], splits["validation"]),
  )
  return stats


def format_statistics(stats: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
