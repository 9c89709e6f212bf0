"""Boulanger-Lewandowski piano-roll files (.mat, .pickle), their TFDS builders, and bad input.

The reference numbers use the standard JSB Chorales file at ../shared/data/JSB_Chorales.mat
(relative to the repository root); those tests are skipped when it is absent. TFDS data dirs
live under pytest's tmp_path.
"""

import os
import pathlib
import pickle

import numpy as np
import pytest

from rnn_research import data
from rnn_research.data import piano_roll

STANDARD_JSB = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "JSB_Chorales.mat"
needs_standard = pytest.mark.skipif(
    not STANDARD_JSB.is_file(), reason=f"standard JSB file not found at {STANDARD_JSB}")


def _fake_rolls(seed, counts=(6, 3, 2)):
  rng = np.random.default_rng(seed)
  return {
      split: [(rng.random((int(rng.integers(3, 12)), 88)) < 0.05).astype(np.uint8) for _ in range(n)]
      for split, n in zip(piano_roll.SPLITS, counts)
  }


def write_pickle(path, rolls):
  """{split: [uint8 [T, 88]]} as a Boulanger-Lewandowski .pickle (MIDI notes per frame)."""
  keys = {"train": "train", "validation": "valid", "test": "test"}
  notes = {keys[s]: [[tuple(np.flatnonzero(f) + 21) for f in r] for r in rs] for s, rs in rolls.items()}
  with open(path, "wb") as f:
    pickle.dump(notes, f)


def write_mat(path, rolls):
  """{split: [uint8 [T, 88]]} in the .mat form: traindata/validdata/testdata cell arrays."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  cells = {}
  for split, key in (("train", "traindata"), ("validation", "validdata"), ("test", "testdata")):
    cells[key] = np.empty((1, len(rolls[split])), object)
    for i, roll in enumerate(rolls[split]):
      cells[key][0, i] = roll
  scipy.io.savemat(path, cells)


def _assert_same_splits(a, b):
  assert a.keys() == b.keys()
  for split in a:
    assert len(a[split]) == len(b[split])
    for x, y in zip(a[split], b[split]):
      np.testing.assert_array_equal(x, y)


@needs_standard
def test_standard_jsb_reference_numbers():
  splits = piano_roll.read_polyphonic_file(STANDARD_JSB)
  stats = piano_roll.roll_statistics(splits)
  assert (stats["num_train"], stats["num_validation"], stats["num_test"]) == (229, 76, 77)
  assert all(r.shape[1] == 88 and r.dtype == np.uint8 for rs in splits.values() for r in rs)
  assert 59.0 < stats["mean_length"] < 62.0
  assert stats["max_keys_on"] == 4 and abs(stats["mean_keys_on"] - 3.9) < 0.05
  assert abs(stats["frequency_nll_test"] - 11.06) < 0.05
  assert abs(piano_roll.uniform_nll() - 61.0) < 0.01


@needs_standard
def test_pickle_and_mat_forms_agree(tmp_path):
  from_mat = piano_roll.read_polyphonic_file(STANDARD_JSB)
  write_pickle(tmp_path / "JSB Chorales.pickle", from_mat)
  _assert_same_splits(piano_roll.read_polyphonic_file(tmp_path / "JSB Chorales.pickle"), from_mat)


@needs_standard
def test_standard_jsb_through_tfds(tmp_path):
  expected = piano_roll.read_polyphonic_file(STANDARD_JSB)
  for split in piano_roll.SPLITS:
    source = data.load("jsb_chorales/standard", split, data_dir=tmp_path, path=STANDARD_JSB)
    assert len(source) == len(expected[split])
    for i in (0, len(source) - 1):
      example = source[i]
      index = int(example["id"].split("/")[1])  # TFDS stores examples in hashed-key order
      np.testing.assert_array_equal(example["roll"], expected[split][index])
  stats = source.info.metadata["statistics"]
  assert abs(stats["frequency_nll_test"] - 11.06) < 0.05
  # Once prepared, the dataset loads without the file.
  assert len(data.load("jsb_chorales/standard", "test", data_dir=tmp_path)) == 77


def test_pickle_roundtrip_and_tfds_rebuild_on_new_file(tmp_path):
  first, second = _fake_rolls(0), _fake_rolls(1, counts=(4, 2, 2))
  write_pickle(tmp_path / "a.pickle", first)
  write_pickle(tmp_path / "b.pickle", second)
  _assert_same_splits(piano_roll.read_polyphonic_file(tmp_path / "a.pickle"), first)
  data_dir = tmp_path / "tfds"
  assert len(data.load("nottingham", "train", data_dir=data_dir, path=tmp_path / "a.pickle")) == 6
  assert len(data.load("nottingham", "train", data_dir=data_dir, path=tmp_path / "b.pickle")) == 4
  source = data.load("nottingham", "test", data_dir=data_dir)  # keeps the latest build
  rolls = sorted((ex["id"], ex["roll"]) for ex in source)
  for (_, roll), expected in zip(rolls, second["test"]):
    np.testing.assert_array_equal(roll, expected)


def test_frequency_model_recovers_known_probabilities():
  rng = np.random.default_rng(0)
  p = rng.uniform(0.01, 0.3, size=88)
  train = [(rng.random((50_000, 88)) < p).astype(np.uint8)]
  test = [(rng.random((20_000, 88)) < p).astype(np.uint8)]
  x = test[0].astype(np.float64)
  true_model_nll = -float(np.mean(x @ np.log(p) + (1 - x) @ np.log(1 - p)))
  assert abs(piano_roll.frequency_model_nll(train, test) - true_model_nll) < 0.01
  assert piano_roll.frequency_model_nll(train, test) < piano_roll.uniform_nll()


def test_missing_file_names_path_and_expected_content(tmp_path):
  missing = tmp_path / "JSB_Chorales.mat"
  with pytest.raises(FileNotFoundError, match=r"JSB_Chorales\.mat.*does not exist.*\.pickle.*\.mat"):
    piano_roll.read_polyphonic_file(missing)
  with pytest.raises(FileNotFoundError, match="not prepared in .*pass path="):
    data.load("jsb_chorales/standard", "train", data_dir=tmp_path / "tfds")
  write_pickle(tmp_path / "a.pickle", _fake_rolls(0))
  data.load("jsb_chorales/standard", "train", data_dir=tmp_path / "tfds", path=tmp_path / "a.pickle")
  with pytest.raises(FileNotFoundError, match=r"JSB_Chorales\.mat.*does not exist"):  # even if built
    data.load("jsb_chorales/standard", "train", data_dir=tmp_path / "tfds", path=missing)


@pytest.mark.parametrize("name, content, message", [
    ("x.mat", b"not a matlab file at all" * 10, "is not a readable MATLAB file"),
    ("x.pickle", b"\x00garbage", "is not a readable pickle"),
    ("x.pickle", pickle.dumps([1, 2, 3]), "must hold a dict with keys train/valid/test"),
    ("x.pickle", pickle.dumps({"train": [[(10,)]], "valid": [], "test": []}), "outside the piano range"),
    ("x.txt", b"", "must end in .pickle or .mat"),
])
def test_corrupt_or_wrong_format_file_says_which(tmp_path, name, content, message):
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(ValueError, match=message):
    piano_roll.read_polyphonic_file(path)
  data_dir = tmp_path / "tfds"
  with pytest.raises(ValueError, match=message):
    data.load("jsb_chorales/standard", "train", data_dir=data_dir, path=path)
  # Nothing half-written: no dataset version and no incomplete build left in the data dir.
  written = [p for p in data_dir.rglob("*") if "1.0.0" in p.name or "incomplete" in p.name]
  assert written == []


def test_mat_with_wrong_keys_lists_what_it_found(tmp_path):
  import scipy.io
  scipy.io.savemat(tmp_path / "x.mat", {"train": np.zeros((2, 88))})
  with pytest.raises(ValueError, match=r"lacks \['traindata'.*found \['train'\]"):
    piano_roll.read_polyphonic_file(tmp_path / "x.mat")


def test_unknown_names_list_the_valid_ones(tmp_path):
  with pytest.raises(ValueError, match="unknown dataset 'jsb'.*jsb_chorales/music21.*tiny_shakespeare"):
    data.load("jsb", "train", data_dir=tmp_path)
  with pytest.raises(ValueError, match="unknown config 'mat' .*jsb_chorales/music21, jsb_chorales/standard"):
    data.load("jsb_chorales/mat", "train", data_dir=tmp_path)
  rolls = _fake_rolls(2)
  write_pickle(tmp_path / "m.pickle", rolls)
  with pytest.raises(ValueError, match="unknown split 'valid'.*validation"):
    data.load("muse_data", "valid", data_dir=tmp_path, path=tmp_path / "m.pickle")
  assert set(data.dataset_names()) >= {"jsb_chorales/music21", "jsb_chorales/standard", "abc_tunes"}
  assert not os.path.exists(tmp_path / "jsb")
