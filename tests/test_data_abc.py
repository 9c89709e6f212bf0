"""ABC folk tunes: parsing, split by tune, the saved character vocabulary, and batches."""

import collections
import pathlib

import numpy as np
import pytest

from rnn_research import data
from rnn_research.data import abc_tunes
from rnn_research.data.vocabulary import Vocabulary

FIXTURE = pathlib.Path(__file__).parent / "data_fixtures" / "tunes.abc"


def test_parse_abc_keeps_valid_tunes_with_labels():
  tunes = abc_tunes.parse_abc(FIXTURE.read_text(), "fixture/tunes", "fixture")
  assert [t["title"] for t in tunes] == ["First Reel", "Free Song"]
  first, second = tunes
  assert (first["key"], first["meter"]) == ("G", "4/4")  # the comment is not part of the label
  assert (second["key"], second["meter"]) == ("Dmix", "none")
  assert first["text"].startswith("T: First Reel") and first["text"].endswith("dedB dedB |")
  assert "X:" not in first["text"] and "header" not in first["text"]
  assert first["id"] == "fixture/tunes/0" and second["id"] == "fixture/tunes/1"


def test_split_is_by_tune_and_close_to_shares():
  ids = [f"c/f/{i}" for i in range(20_000)]
  counts = collections.Counter(abc_tunes.split_of(i) for i in ids)
  for split, share in abc_tunes.SPLIT_SHARES.items():
    assert abs(counts[split] / len(ids) - share / 100) < 0.01
  assert [abc_tunes.split_of(i) for i in ids[:50]] == [abc_tunes.split_of(i) for i in ids[:50]]


def test_vocabulary_reserves_symbols_and_round_trips(tmp_path):
  vocab = Vocabulary.from_texts(["abc", "cab!"])
  assert vocab.symbols[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
  assert (vocab.pad_id, vocab.start_id, vocab.end_id) == (0, 1, 2) and len(vocab) == 8
  ids = vocab.encode("cab", add_start=True, add_end=True)
  assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id and ids.dtype == np.int32
  assert vocab.decode(np.concatenate([ids, [0, 0]])) == "cab"
  assert vocab.encode("z")[0] == vocab.unk_id
  vocab.save(tmp_path / "vocab.json")
  assert Vocabulary.load(tmp_path / "vocab.json") == vocab
  with pytest.raises(FileNotFoundError, match="nope.json"):
    Vocabulary.load(tmp_path / "nope.json")
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    Vocabulary.load(tmp_path / "bad.json")
  with pytest.raises(ValueError, match="single-character"):
    Vocabulary(["ab"])


@pytest.fixture(scope="module")
def abc_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  data.builder("abc_tunes", data_dir=data_dir)
  return data_dir


def test_abc_dataset_counts_labels_and_saved_vocabulary(abc_data_dir):
  sizes = {s: len(data.load("abc_tunes", s, data_dir=abc_data_dir)) for s in abc_tunes.SPLIT_SHARES}
  total = sum(sizes.values())
  assert 10_000 < total < 13_000  # ~11,600 tunes in music21 10
  assert abs(sizes["train"] / total - 0.9) < 0.02
  test = data.load("abc_tunes", "test", data_dir=abc_data_dir)
  example = test[0]
  assert set(example) == {"text", "key", "meter", "title", "collection", "id"}
  assert example["collection"] in abc_tunes.COLLECTIONS and example["key"]
  vocab = data.load_vocabulary("abc_tunes", data_dir=abc_data_dir)
  texts = [test[i]["text"] for i in range(len(test))]
  assert set("".join(texts)) <= set(vocab.characters)
  assert vocab.decode(vocab.encode(texts[0], add_start=True, add_end=True)) == texts[0]
  assert vocab.unk_id not in vocab.encode("".join(texts))


def test_abc_batches_for_language_modelling_and_classification(abc_data_dir):
  source = data.load("abc_tunes", "validation", data_dir=abc_data_dir)
  vocab = data.load_vocabulary("abc_tunes", data_dir=abc_data_dir)
  lm = next(data.Loader(source, 4, transform=data.char_next_step(vocab), seed=0))
  assert lm["inputs"].shape == lm["targets"].shape == lm["mask"].shape
  assert (lm["inputs"][:, 0] == vocab.start_id).all()
  ends = lm["targets"][np.arange(4), lm["lengths"] - 1]
  assert (ends == vocab.end_id).all()
  np.testing.assert_array_equal(lm["inputs"][:, 1:][lm["mask"][:, 1:]], lm["targets"][:, :-1][lm["mask"][:, 1:]])
  meters = sorted({source[i]["meter"] for i in range(len(source))})
  labels = {m: i for i, m in enumerate(meters)}
  cls = next(data.Loader(source, 4, transform=data.char_classify(vocab, labels, "meter"), seed=0))
  assert cls["targets"].shape == (4,) and cls["inputs"].ndim == 2
  with pytest.raises(ValueError, match="meter 'none' is not among the 1 known labels"):
    data.char_classify(vocab, {"4/4": 0}, "meter")({"text": "ab", "meter": "none"})


def test_abc_takes_no_path(tmp_path):
  with pytest.raises(ValueError, match="path= is not used by 'abc_tunes'"):
    data.load("abc_tunes", "train", data_dir=tmp_path, path="x.abc")
