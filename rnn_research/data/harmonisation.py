"""Chorale harmonisation as tagging: the soprano line in, the bass line out, one label per
quarter-note frame.

In a piano roll `[T, 88]` (key k = MIDI 21 + k) the soprano is the highest sounding key of a
frame and the bass the lowest (the same key when only one sounds). A line is token ids `[T]`:
0 for a rest (no key on), k + 1 for key k, so there are 89 classes.
"""
import numpy as np

from rnn_research.data.piano_roll import NUM_KEYS

NUM_CLASSES = NUM_KEYS + 1  # a rest and the 88 keys


def outer_voices(roll) -> tuple[np.ndarray, np.ndarray]:
  """roll [T, 88] binary -> (soprano [T], bass [T]) int32 ids (0 = rest, k + 1 = key k)."""
  roll = np.asarray(roll)
  if roll.ndim != 2 or roll.shape[1] != NUM_KEYS:
    raise ValueError(f"roll must be [time, {NUM_KEYS}], got shape {roll.shape}")
  on = roll > 0
  sounding = on.any(axis=1)
  highest = NUM_KEYS - np.argmax(on[:, ::-1], axis=1)  # (k + 1) of the highest key k
  lowest = np.argmax(on, axis=1) + 1
  return (np.where(sounding, highest, 0).astype(np.int32),
          np.where(sounding, lowest, 0).astype(np.int32))


def soprano_to_bass(example: dict) -> dict:
  """`{"roll": [T, 88]}` -> inputs = soprano ids [T], targets = bass ids [T]."""
  soprano, bass = outer_voices(example["roll"])
  return {"inputs": soprano, "targets": bass}
