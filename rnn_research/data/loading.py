"""`load(name, split)`: a random-access source of a dataset by its TFDS name, preparing it once.

Names:
- ours (built on first use into `data_dir`, then read from there): `jsb_chorales/music21`
  (default config of `jsb_chorales`), `jsb_chorales/standard`, `nottingham`, `muse_data`,
  `piano_midi_de` (these four need `path=` to a `.pickle`/`.mat` file the first time, and are
  rebuilt when a different file is given), `abc_tunes`;
- TFDS catalogue text (`tiny_shakespeare`, `imdb_reviews[/config]`, `lm1b[/config]`): read only,
  from a copy already prepared in `data_dir` as array_record (preparing those needs TensorFlow
  and the network, so it is done elsewhere, e.g. `tfds build tiny_shakespeare
  --file_format=array_record`).

`data_dir` defaults to `$RNN_RESEARCH_DATA_DIR`, else TFDS's own default (`$TFDS_DATA_DIR` or
`~/tensorflow_datasets`). Examples come back as dicts of numpy arrays and `str`.
"""

import os
from typing import Any

OURS = {
    "jsb_chorales": ("music21", "standard"),
    "nottingham": (),
    "muse_data": (),
    "piano_midi_de": (),
    "abc_tunes": (),
}
CATALOGUE_TEXT = ("tiny_shakespeare", "imdb_reviews", "lm1b")
DATA_DIR_ENV = "RNN_RESEARCH_DATA_DIR"


def dataset_names() -> list[str]:
  """Every name `load` accepts (catalogue entries also take their TFDS configs)."""
  ours = [f"{n}/{c}" if c else n for n, configs in OURS.items() for c in configs or ("",)]
  return ours + list(CATALOGUE_TEXT)


def _split_name(name: str) -> tuple[str, str | None]:
  if not isinstance(name, str) or name.count("/") > 1:
    raise ValueError(f"name must be 'dataset' or 'dataset/config', got {name!r}")
  base, _, config = name.partition("/")
  if base not in OURS and base not in CATALOGUE_TEXT:
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
  if base in OURS and config and config not in OURS[base]:
    valid = ", ".join(f"{base}/{c}" for c in OURS[base]) or base
    raise ValueError(f"unknown config {config!r} of {base!r}; valid: {valid}")
  return base, config or None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str | None:
  if data_dir is not None:
    return os.fspath(data_dir)
  return os.environ.get(DATA_DIR_ENV)


def builder(name: str, data_dir=None, path=None, prepare: bool = True):
  """The TFDS builder of `name`, prepared in `data_dir` unless `prepare=False`.

  Args:
    name: a name from `dataset_names()`.
    data_dir: TFDS data dir (see module docstring for the default).
    path: for the file-backed datasets, the `.pickle`/`.mat` file to build from.
    prepare: build the dataset if it is missing (or stale for `path`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  base, config = _split_name(name)
  data_dir = resolve_data_dir(data_dir)
  if base in CATALOGUE_TEXT:
    if path is not None:
      raise ValueError(f"path= is for our file-backed datasets; {name!r} reads data_dir only")
    return _catalogue_builder(tfds, name, data_dir)
  from rnn_research.data import builders  # pylint: disable=g-import-not-at-top  # registers ours

  classes = {"jsb_chorales": builders.JsbChorales, "nottingham": builders.Nottingham,
             "muse_data": builders.MuseData, "piano_midi_de": builders.PianoMidiDe,
             "abc_tunes": builders.AbcTunes}
  kwargs = {"config": config} if config else {}
  if base != "abc_tunes":
    kwargs["path"] = path
  elif path is not None:
    raise ValueError("path= is not used by 'abc_tunes' (its tunes come from music21's corpus)")
  b = classes[base](data_dir=data_dir, file_format="array_record", **kwargs)
  if prepare:
    _prepare(tfds, b, path)
  return b


def _prepare(tfds, b, path) -> None:
  """Builds `b` if needed; reads and checks the source first so that bad input writes nothing."""
  needs_path = getattr(b, "needs_path", False)
  stale = False
  if b.is_prepared():
    if not (needs_path and path is not None):
      return
    stale = b.info.metadata.get("source_sha256") != b.source_sha256()
    if not stale:
      return
  if needs_path and path is None:
    label = f"{b.name}/{b.builder_config.name}" if b.builder_config else b.name
    raise FileNotFoundError(
        f"{label} is not prepared in {b.data_dir_root}; pass path= to a .pickle or .mat file "
        "(Boulanger-Lewandowski 2012)")
  if hasattr(b, "source_splits"):
    b.source_splits()
  mode = tfds.download.GenerateMode.FORCE_REDOWNLOAD if stale else None
  b.download_and_prepare(
      download_config=tfds.download.DownloadConfig(download_mode=mode) if mode else None)


def _catalogue_builder(tfds, name: str, data_dir):
  b = tfds.builder(name, data_dir=data_dir)
  where = b.data_dir_root
  if not b.is_prepared():
    raise FileNotFoundError(
        f"{name!r} is not prepared in {where}: prepare it where TensorFlow and the network are "
        f"available with `tfds build {name} --data_dir={where} --file_format=array_record` and "
        "copy it there (this project never downloads)")
  stored = b.info.file_format.value if b.info.file_format else "tfrecord"  # TFDS's old default
  if stored != "array_record":
    raise ValueError(
        f"{name!r} in {where} is stored as {stored}, but reading without TensorFlow "
        f"needs array_record; convert it with `tfds convert_format --dataset_version_dir="
        f"{b.data_dir} --out_file_format=array_record`")
  return b


class Source:
  """Random-access examples of one split, with text features decoded to `str`."""

  def __init__(self, data_source, info):
    self._data = data_source
    self.info = info

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._data[index]
    return {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in example.items()}

  def __iter__(self):
    return (self[i] for i in range(len(self)))


def load(name: str, split: str, data_dir=None, path=None) -> Source:
  """A `Source` of `split` of dataset `name` (see module docstring), preparing it if needed."""
  b = builder(name, data_dir=data_dir, path=path)
  splits = list(b.info.splits.keys())
  if split not in splits:
    raise ValueError(f"unknown split {split!r} of {name!r}; valid splits: {', '.join(splits)}")
  return Source(b.as_data_source(split=split), b.info)


def load_vocabulary(name: str = "abc_tunes", data_dir=None):
  """The character vocabulary saved with a dataset (`abc_tunes`)."""
  from rnn_research.data.vocabulary import Vocabulary  # pylint: disable=g-import-not-at-top

  b = builder(name, data_dir=data_dir)
  if "vocabulary" not in b.info.metadata:
    raise ValueError(f"{name!r} saves no vocabulary; build one with Vocabulary.from_texts")
  return Vocabulary(b.info.metadata["vocabulary"])
