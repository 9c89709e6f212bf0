"""TFDS builders of this project's datasets, written as `array_record` (no TensorFlow needed).

Importing this module registers them with TFDS:
- `jsb_chorales/music21`: built from music21's corpus (see `chorales`), no download;
- `jsb_chorales/standard`, `nottingham`, `muse_data`, `piano_midi_de`: from a Boulanger-Lewandowski
  `.pickle`/`.mat` file given as `path=` (see `piano_roll`);
- `abc_tunes`: folk tunes in ABC notation from music21's corpus (see `abc_tunes`).
Piano-roll examples are `{"roll": uint8 [time, 88], "id": str}`; tunes are
`{"text", "key", "meter", "title", "collection", "id"}` strings. Statistics of the built data
(counts, lengths, keys on, frequency-model NLL) and the source file's SHA-256 go into the
dataset's metadata; `abc_tunes` also stores its character vocabulary there.
"""

import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

from rnn_research.data import abc_tunes, chorales, piano_roll

_CITATION_BL = """@inproceedings{boulanger2012modeling,
  title={Modeling temporal dependencies in high-dimensional sequences: application to
         polyphonic music generation and transcription},
  author={Boulanger-Lewandowski, Nicolas and Bengio, Yoshua and Vincent, Pascal},
  booktitle={ICML}, year={2012}}"""

_MUSIC21_DESCRIPTION = """\
JSB Chorales built from the 368 four-part Bach chorales in music21's corpus: the keys sounding at
each quarter-note beat, as an 88-key binary piano roll (MIDI 21-108), split by BWV number in the
standard 229/76/77 proportions. Measured (music21 10.5): 221/73/74 chorales, mean length 54.3
frames, at most 4 keys on (mean 3.87); a per-key frequency (Bernoulli) model scores 11.48 nats per
frame on test (11.35 on validation); predicting 0.5 everywhere scores 88 ln 2 = 61.0. The standard
file (jsb_chorales/standard) gives 229/76/77, mean length 60.6, 3.89 keys on and 11.06 nats."""


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class _PianoRollBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Piano rolls from a Boulanger-Lewandowski file passed as `path`."""

  VERSION = tfds.core.Version("1.0.0")
  FILE_DESCRIPTION = ""
  # Nothing is downloaded, so there are no URL checksums to look up (TFDS's lookup would need
  # the `importlib_resources` backport for a package outside tensorflow_datasets).
  url_infos = None

  def __init__(self, *, path: str | os.PathLike | None = None, **kwargs):
    self._path = None if path is None else os.fspath(path)
    self._splits = None
    super().__init__(**kwargs)

  @property
  def needs_path(self) -> bool:
    return True

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description if self.builder_config else self.FILE_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "roll": tfds.features.Tensor(shape=(None, piano_roll.NUM_KEYS), dtype=np.uint8),
            "id": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
        citation=_CITATION_BL,
    )

  def source_sha256(self) -> str | None:
    """SHA-256 of the source file (None when the data come from music21)."""
    return _file_sha256(piano_roll.require_file(self._path)) if self.needs_path else None

  def source_splits(self) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Reads (and checks) the source: `{split: [(id, roll uint8 [T, 88])]}`, cached."""
    if self._splits is None:
      if self._path is None:
        raise FileNotFoundError(
            f"{self.name} needs path= pointing to {piano_roll.FILE_HELP}")
      rolls = piano_roll.read_polyphonic_file(self._path)
      self._splits = {s: [(f"{s}/{i}", r) for i, r in enumerate(rolls[s])] for s in rolls}
    return self._splits

  def _split_generators(self, dl_manager):
    del dl_manager  # no download: the data are local
    splits = self.source_splits()
    stats = piano_roll.roll_statistics({s: [r for _, r in items] for s, items in splits.items()})
    self.info.metadata["statistics"] = stats
    self.info.metadata["source_sha256"] = self.source_sha256()
    return {split: self._generate_examples(items) for split, items in splits.items()}

  def _generate_examples(self, items):
    for example_id, roll in items:
      yield example_id, {"roll": roll, "id": example_id}


class JsbChorales(_PianoRollBuilder):
  """JSB Chorales: `music21` (built in, the default) or `standard` (the .pickle/.mat file)."""

  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="music21", description=_MUSIC21_DESCRIPTION),
      tfds.core.BuilderConfig(
          name="standard",
          description="JSB Chorales of Boulanger-Lewandowski et al. (2012) from the user's "
          "JSB Chorales.pickle or JSB_Chorales.mat: 229/76/77 chorales, 88 keys.",
      ),
  ]

  @property
  def needs_path(self) -> bool:
    return self.builder_config.name == "standard"

  def source_splits(self) -> dict[str, list[tuple[str, np.ndarray]]]:
    if self.needs_path or self._splits is not None:
      return super().source_splits()
    rolls = dict(chorales.chorale_rolls())
    split_of = chorales.assign_splits(list(rolls))
    self._splits = {
        split: [(name, rolls[name]) for name in sorted(rolls, key=chorales.catalogue_number)
                if split_of[name] == split]
        for split in piano_roll.SPLITS
    }
    return self._splits


class Nottingham(_PianoRollBuilder):
  FILE_DESCRIPTION = "Nottingham folk tunes of Boulanger-Lewandowski et al. (2012), from a file."


class MuseData(_PianoRollBuilder):
  FILE_DESCRIPTION = "MuseData classical music of Boulanger-Lewandowski et al. (2012), from a file."


class PianoMidiDe(_PianoRollBuilder):
  FILE_DESCRIPTION = "Piano-midi.de piano pieces of Boulanger-Lewandowski et al. (2012), from a file."


class AbcTunes(tfds.core.GeneratorBasedBuilder):
  """Folk tunes in ABC notation from music21's corpus, one tune per example, split by tune."""

  VERSION = tfds.core.Version("1.0.0")
  url_infos = None  # nothing is downloaded (see _PianoRollBuilder)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return tfds.core.DatasetInfo(
        builder=self,
        description=abc_tunes.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            k: text for k in ("text", "key", "meter", "title", "collection", "id")
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # no download: the tunes ship with music21
    tunes = abc_tunes.corpus_tunes()
    splits = {split: [t for t in tunes if abc_tunes.split_of(t["id"]) == split]
              for split in abc_tunes.SPLIT_SHARES}
    vocab = abc_tunes.build_vocabulary(tunes)
    self.info.metadata["vocabulary"] = vocab.characters
    self.info.metadata["counts"] = {split: len(items) for split, items in splits.items()}
    return {split: self._generate_examples(items) for split, items in splits.items()}

  def _generate_examples(self, tunes):
    for tune in tunes:
      yield tune["id"], tune
