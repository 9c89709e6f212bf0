"""Generated music as text and pictures: 88-key piano rolls to ABC notation and back (through
music21), and piano rolls drawn as PNG.

A roll is `uint8 [time, 88]` (column k = MIDI note 21 + k), one frame per quarter note, as in
`rnn_research.data.piano_roll`. `roll_to_abc` writes every frame as a quarter-note chord (a rest
where no key is on), four to a bar, with an explicit accidental on every note (`=C`, `^C`) so
that no accidental carries over within a bar.
"""
import numpy as np

from rnn_research.data.piano_roll import LOWEST_MIDI, NUM_KEYS

_PITCH_CLASSES = ("=C", "^C", "=D", "^D", "=E", "=F", "^F", "=G", "^G", "=A", "^A", "=B")
FRAMES_PER_BAR = 4


def abc_note(midi: int) -> str:
  """MIDI note number -> ABC pitch: 60 (middle C) is `=C`, 72 `=c`, 84 `=c'`, 48 `=C,`."""
  octave, pitch_class = divmod(int(midi), 12)
  name = _PITCH_CLASSES[pitch_class]
  octave -= 5  # MIDI octave 5 holds 60..71, ABC's uppercase octave
  if octave >= 1:
    return name[0] + name[1].lower() + "'" * (octave - 1)
  return name + "," * -octave


def check_roll(roll) -> np.ndarray:
  roll = np.asarray(roll)
  if roll.ndim != 2 or roll.shape[1] != NUM_KEYS or not np.isin(roll, (0, 1)).all():
    raise ValueError(f"roll must be a binary [time, {NUM_KEYS}] array, got shape "
                     f"{roll.shape}")
  return roll.astype(np.uint8)


def roll_to_abc(roll, title: str = "sample") -> str:
  """A piano roll as an ABC tune: L:1/4, M:4/4, K:C, a chord `[...]` or rest `z` per frame."""
  roll = check_roll(roll)
  events = []
  for frame in roll:
    keys = np.flatnonzero(frame) + LOWEST_MIDI
    notes = "".join(abc_note(k) for k in keys)
    events.append("z" if not len(keys) else notes if len(keys) == 1 else f"[{notes}]")
  bars = [" ".join(events[i:i + FRAMES_PER_BAR]) for i in range(0, len(events), FRAMES_PER_BAR)]
  lines = [" | ".join(bars[i:i + 4]) + " |" for i in range(0, len(bars), 4)]
  return "\n".join(["X:1", f"T:{title}", "M:4/4", "L:1/4", "K:C"] + lines) + "\n"


def abc_to_roll(text: str) -> np.ndarray | None:
  """The piano roll (one frame per quarter-note beat) of an ABC tune, read by music21; None
  when music21 cannot read it (generated text need not be valid ABC)."""
  from music21 import converter  # pylint: disable=g-import-not-at-top
  from rnn_research.data.chorales import score_roll  # pylint: disable=g-import-not-at-top
  if "X:" not in text:
    text = "X:1\n" + text
  try:
    score = converter.parse(text, format="abc")
    if hasattr(score, "scores"):  # an Opus of several tunes: the first
      score = score.scores[0]
    roll = score_roll(score)
  except Exception:  # music21 raises many kinds on malformed ABC; all mean "not readable"
    return None
  return roll if len(roll) else None


def plot_piano_rolls(rolls: dict, path: str, *, title: str = "") -> str:
  """One panel per named roll (keys on the vertical axis, frames across), saved as PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  if not rolls:
    raise ValueError("rolls must name at least one roll")
  rolls = {name: check_roll(roll) for name, roll in rolls.items()}
  on = np.flatnonzero(np.any([r.any(0) for r in rolls.values()], axis=0))
  low, high = (on.min() - 2, on.max() + 3) if len(on) else (0, NUM_KEYS)
  low, high = max(low, 0), min(high, NUM_KEYS)
  fig, axes = plt.subplots(len(rolls), 1, figsize=(10, 1.6 + 1.4 * len(rolls)), squeeze=False)
  for ax, (name, roll) in zip(axes[:, 0], rolls.items()):
    ax.imshow(roll[:, low:high].T, origin="lower", aspect="auto", cmap="Greys",
              interpolation="nearest", extent=(0, len(roll), low + LOWEST_MIDI - 0.5,
                                               high + LOWEST_MIDI - 0.5))
    ax.set_ylabel(f"{name}\nMIDI note", fontsize=8)
  axes[-1, 0].set_xlabel("frame (quarter note)")
  if title:
    axes[0, 0].set_title(title)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path
