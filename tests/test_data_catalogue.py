"""TFDS catalogue text read from a data dir, tested on a tiny fake `tiny_shakespeare`.

The fake is written by TFDS's own `tiny_shakespeare` builder with its download replaced by a
few lines of local text, as array_record: the same files, features and metadata as a real
prepared copy. Nothing is downloaded. Also checks that the heavy libraries stay lazy.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from rnn_research import data

TEXT = "".join(f"LINE {i}: To be, or not to be, that is the question.\n" for i in range(200))


def _write_fake_tiny_shakespeare(data_dir):
  from tensorflow_datasets.datasets.tiny_shakespeare import tiny_shakespeare_dataset_builder as ts

  class FakeTinyShakespeare(ts.Builder, skip_registration=True):
    name = "tiny_shakespeare"
    url_infos = None  # nothing to download

    def _split_generators(self, dl_manager):
      del dl_manager
      a, b = int(len(TEXT) * 0.9), int(len(TEXT) * 0.95)
      return {"train": self._generate_examples("train", TEXT[:a]),
              "validation": self._generate_examples("validation", TEXT[a:b]),
              "test": self._generate_examples("test", TEXT[b:])}

  builder = FakeTinyShakespeare(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder


def test_tiny_shakespeare_from_data_dir(tmp_path):
  _write_fake_tiny_shakespeare(tmp_path)
  train = data.load("tiny_shakespeare", "train", data_dir=tmp_path)
  assert len(train) == 1 and train[0]["text"] == TEXT[: int(len(TEXT) * 0.9)]
  vocab = data.Vocabulary.from_texts([train[0]["text"]])
  test = data.load("tiny_shakespeare", "test", data_dir=tmp_path)
  batch = next(data.Loader(test, 1, transform=data.char_next_step(vocab), shuffle=False))
  assert batch["inputs"].shape == (1, len(test[0]["text"]) + 1)
  assert vocab.decode(batch["targets"][0]) == test[0]["text"]


def test_missing_catalogue_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"'lm1b' is not prepared in .*tfds build lm1b"):
    data.load("lm1b", "train", data_dir=tmp_path)
  with pytest.raises(ValueError, match="path= is for our file-backed datasets"):
    data.load("imdb_reviews", "train", data_dir=tmp_path, path="x")


def test_catalogue_dataset_in_another_format_says_to_convert(tmp_path):
  builder = _write_fake_tiny_shakespeare(tmp_path)
  info_path = builder.data_path / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(ValueError, match="stored as .*tfrecord.*tfds convert_format"):
    data.load("tiny_shakespeare", "train", data_dir=tmp_path)


def test_heavy_libraries_are_imported_lazily():
  code = ("import sys, rnn_research, rnn_research.data as d; "
          "d.SyntheticSource('adding', 10, 4)[0]; "
          "print(sorted(m for m in ('tensorflow_datasets', 'grain', 'music21', 'scipy') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
  assert np.isclose(data.uniform_nll(), 88 * np.log(2))
