"""JSB Chorales built from music21's corpus: beat sampling, split, and one full TFDS build.

The full build (about 35 s on one core) runs once per module into a pytest tmp data dir.
"""

import collections

import numpy as np
import pytest

from rnn_research import data
from rnn_research.data import chorales, piano_roll


def test_score_roll_samples_the_notes_sounding_at_each_beat():
  from music21 import chord, note, stream

  part = stream.Part()
  part.append(note.Note("C4", quarterLength=2.0))   # beats 0, 1
  part.append(note.Note("D4", quarterLength=0.5))   # sounds at beat 2
  part.append(note.Note("E4", quarterLength=0.5))   # between beats: never sampled
  part.append(note.Rest(quarterLength=1.0))         # beat 3 silent
  part.append(chord.Chord(["G4", "B4"], quarterLength=1.0))  # beat 4
  score = stream.Score([part])
  roll = chorales.score_roll(score)
  assert roll.shape == (5, 88)
  on = [sorted(np.flatnonzero(frame) + 21) for frame in roll]
  assert on == [[60], [60], [62], [], [67, 71]]


def test_catalogue_numbers_sort_numerically():
  names = ["bwv10.7.mxl", "bwv1.6.mxl", "bwv248.12-2.mxl", "bwv248.5.mxl"]
  assert sorted(names, key=chorales.catalogue_number) == [
      "bwv1.6.mxl", "bwv10.7.mxl", "bwv248.5.mxl", "bwv248.12-2.mxl"]
  with pytest.raises(ValueError, match="no catalogue number"):
    chorales.catalogue_number("chorale.mxl")


def test_split_follows_standard_proportions_and_ignores_input_order():
  names = [f"bwv{i}.{j}.mxl" for i in range(1, 93) for j in range(1, 5)]  # 368 names
  split = chorales.assign_splits(names)
  counts = collections.Counter(split.values())
  for name, standard in chorales.STANDARD_COUNTS.items():
    assert abs(counts[name] - len(names) * standard / 382) <= 1
  assert chorales.assign_splits(names[::-1]) == split
  # Every split spans the catalogue: each quarter of it holds all three.
  ordered = sorted(names, key=chorales.catalogue_number)
  for quarter in np.array_split(np.array(ordered), 4):
    assert {split[n] for n in quarter} == {"train", "validation", "test"}


def test_conversion_of_a_few_corpus_chorales():
  paths = chorales.corpus_paths()
  assert len(paths) >= 400  # 433 Bach files, minus the Roman-numeral analyses
  rolls = dict(chorales.chorale_rolls(paths[:6]))
  assert 1 <= len(rolls) <= 6
  for roll in rolls.values():
    assert roll.dtype == np.uint8 and roll.shape[1] == 88 and len(roll) > 8
    assert roll.sum(1).max() <= 4 and roll.sum(1).mean() > 3


@pytest.fixture(scope="module")
def built_music21(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  return data.builder("jsb_chorales/music21", data_dir=data_dir), data_dir


def test_music21_build_matches_standard_statistics(built_music21):
  builder, data_dir = built_music21
  splits = {s: [ex["roll"] for ex in data.load("jsb_chorales/music21", s, data_dir=data_dir)]
            for s in piano_roll.SPLITS}
  stats = piano_roll.roll_statistics(splits)
  assert sum(len(r) for r in splits.values()) == 368
  for name, standard in chorales.STANDARD_COUNTS.items():
    assert abs(stats[f"num_{name}"] - 368 * standard / 382) <= 1
  assert abs(stats["mean_length"] - 54) < 2
  assert stats["max_keys_on"] == 4 and abs(stats["mean_keys_on"] - 3.87) < 0.05
  assert 11.0 < stats["frequency_nll_test"] < 11.9
  assert stats == pytest.approx(builder.info.metadata["statistics"])
  assert "11.48 nats" in builder.info.description and "54.3" in builder.info.description


def test_music21_build_is_cached_and_batches(built_music21, monkeypatch):
  _, data_dir = built_music21

  def convert_again(*args, **kwargs):
    raise AssertionError("the built dataset was converted again")

  monkeypatch.setattr(chorales, "chorale_rolls", convert_again)
  train = data.load("jsb_chorales/music21", "train", data_dir=data_dir)
  assert train[0]["id"].startswith("bwv")
  loader = data.Loader(train, 8, transform=data.piano_roll_next_step, seed=0, bucket_batches=4)
  batch = next(loader)
  assert batch["inputs"].shape[0] == 8 and batch["inputs"].shape[2] == 88
  assert batch["inputs"].shape[1] == batch["lengths"].max()
  np.testing.assert_array_equal(batch["targets"].sum((1, 2)) > 0, True)
