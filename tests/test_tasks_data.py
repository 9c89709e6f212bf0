"""Data of the task shapes: ABC header labels, transposition (checked against music21's reading
of the ABC), outer voices of a chorale, generated string pairs."""
import numpy as np
import pytest

from rnn_research.data import abc_headers, harmonisation, strings, transpose
from rnn_research.tasks.seq2seq import transposition_examples

TUNE = "T: Reel\nR: reel\nM: C|\nL: 1/8\nK: Dmix\n|: AB [M:3/4] c2 [K:G] d |\nw: words"


def test_headers_are_removed_and_labels_normalised():
  assert abc_headers.split_header(TUNE)[0][-1] == "K: Dmix"
  assert abc_headers.remove_fields(TUNE) == "T: Reel\nR: reel\nL: 1/8\n|: AB  c2  d |\nw: words"
  assert abc_headers.notes(TUNE) == "|: AB  c2  d |\nw: words"
  assert abc_headers.field(TUNE, "L") == "1/8" and abc_headers.field(TUNE, "Q", "x") == "x"
  keys = {"G": "G", "Gmin": "Gm", "Em": "Em", "AMix": "Amix", "F# dorian": "F#dor",
          "Bb major": "Bb", "D minor": "Dm", "none": "none", "Hp": "Hp"}
  assert {k: abc_headers.normalize_key(k) for k in keys} == keys
  assert [abc_headers.normalize_meter(m) for m in ("C", "C|", "6 / 8")] == ["4/4", "2/2", "6/8"]
  tune = abc_headers.assemble_tune("L:1/16\nABc|", "D", "3/4")
  assert tune == "X:1\nT:generated\nM:3/4\nL:1/16\nK:D\nABc|\n"


def _midi(abc_body: str, key: str) -> list[int]:
  from music21 import converter
  score = converter.parse(f"X:1\nL:1/8\nM:4/4\nK:{key}\n{abc_body}\n", format="abc",
                          forceSource=True)
  return [p.midi for n in score.flatten().notes for p in n.pitches]


@pytest.mark.parametrize("key,shift", [("G", 2), ("Dm", -5), ("Bb", 6), ("Ador", 3)])
def test_transposition_moves_every_pitch_by_the_shift(key, shift):
  """music21 reads the source and the result; every pitch must move by `shift` semitones. The
  body repeats its accidentals within a bar (music21 does not carry them)."""
  body = "D2 ^F G | A,B, c' [CEG]2 _B =B | {g}f e2 z d/ ^c _e |"
  new, new_key = transpose.transpose(body, key, shift)
  before, after = _midi(body, key), _midi(new, new_key)
  assert len(before) == len(after) == 17  # the grace note counts
  np.testing.assert_array_equal(np.array(after) - before, shift)
  assert transpose.fifths(new_key) in range(-7, 8)


def test_accidentals_hold_to_the_bar_line():
  """ABC 2.1: an accidental holds for its letter and octave until the bar line. In D minor,
  "^c c" is C sharp twice; up a tone, in E minor, both are D sharp, the second written without
  its sharp; after the bar line the key signature holds again. "_B B" in C is B flat twice: up
  a fifth, in G (F sharp), F natural twice; then B, F sharp by the signature."""
  assert transpose.transpose("^c c C | c", "Dm", 2) == ("^d d D | d", "Em")
  assert transpose.transpose("_B B | B", "C", 7) == ("=f f | f", "G")
  with pytest.raises(ValueError, match="alteration of 3"):  # F triple sharp
    transpose.transpose("^^c", "Bb", 6)


def test_keys_signatures_and_errors():
  assert transpose.signature("D") == dict(C=1, D=0, E=0, F=1, G=0, A=0, B=0)
  assert transpose.signature("Gm") == dict(C=0, D=0, E=-1, F=0, G=0, A=0, B=-1)
  assert transpose.transposed_key("F", 6) == "B"  # five sharps, not C flat's seven flats
  assert transpose.transposed_key("Em", -2) == "Dm"
  with pytest.raises(ValueError, match="key must be"):
    transpose.signature("H")
  with pytest.raises(ValueError, match="accidental without a note"):
    transpose.transpose("A ^ B", "C", 2)
  assert transpose.clean_body('"G"A !trill!B +fermata+c % note\nw: la la\nd') == "A B c\nd"
  assert transpose.clean_body("A [K:D] B") is None
  assert transpose.cut_at_bar("ab | cd | ef |", 10) == "ab | cd |"


def test_transposition_examples_skip_what_they_cannot_transpose():
  tunes = [{"text": "K:G\nGAB | d2", "key": "G"}, {"text": "K:HP\nGAB |", "key": "HP"},
           {"text": "K:D\nA [K:G] B |", "key": "D"}]
  examples = transposition_examples(tunes, max_chars=100)
  assert len(examples) == 1
  head, body = examples[0]["source"].split("\n")
  source_key, target_key = head.split(">")
  assert (source_key, body) == ("G", "GAB | d2")
  shift = (_midi(examples[0]["target"], target_key)[0] - _midi(body, "G")[0])
  assert transpose.transpose(body, "G", shift) == (examples[0]["target"], target_key)


def test_outer_voices_match_a_loop(rng):
  roll = (rng.random((20, 88)) < 0.03).astype(np.uint8)
  roll[3] = 0
  soprano, bass = harmonisation.outer_voices(roll)
  for t, frame in enumerate(roll):
    keys = np.flatnonzero(frame)
    assert soprano[t] == (keys.max() + 1 if len(keys) else 0)
    assert bass[t] == (keys.min() + 1 if len(keys) else 0)
  with pytest.raises(ValueError, match="roll must be"):
    harmonisation.outer_voices(np.zeros((3, 12)))


def test_string_pairs_are_right_and_reproducible():
  for task in strings.TASKS:
    source = strings.StringSource(task, 50, seed=1, min_length=2, max_length=5)
    assert [source[i] for i in range(5)] == [strings.StringSource(task, 50, 1, 2, 5)[i]
                                             for i in range(5)]
    for i in range(50):
      pair = source[i]
      if task == "add":
        a, b = pair["source"].split("+")
        assert int(pair["target"]) == int(a) + int(b) and 2 <= len(a) <= 5
      else:
        assert 2 <= len(pair["source"]) <= 5
        want = pair["source"][::-1] if task == "reverse" else "".join(sorted(pair["source"]))
        assert pair["target"] == want
  example = strings.seq2seq_example(strings.VOCABULARY)({"source": "12+3", "target": "15"})
  vocab = strings.VOCABULARY
  np.testing.assert_array_equal(example["inputs"], vocab.encode("12+3"))
  np.testing.assert_array_equal(example["targets"],
                                np.r_[vocab.encode("15"), vocab.end_id, 0])
  assert example["source_lengths"] == 4
  with pytest.raises(ValueError, match="task must be"):
    strings.StringSource("copy", 5)
  with pytest.raises(ValueError, match="min_length"):
    strings.StringSource("sort", 5, min_length=4, max_length=2)
