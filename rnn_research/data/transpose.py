"""Transposing the notes of an ABC tune to another key, for a sequence-to-sequence task whose
target is computable.

A key is a tonic and a mode, as `abc_headers.normalize_key` writes it ("G", "F#m", "Ddor"); its
signature follows from its place on the circle of fifths. Transposing by s semitones to a key
whose tonic is d letters away moves every note d letters (so the music stays in the new key's
spelling) and writes the accidental the new pitch needs, given the new key's signature and the
accidentals already written earlier in the same bar (ABC's rule: an accidental holds for that
note letter and octave until the bar line); a note written with an accidental keeps one, so the
target marks what the source marks. Durations, bar lines and everything else are copied.

Only plain note text is transposed: `clean_body` first removes what is not notes (comments,
chord symbols in quotes, decorations, lyrics and other field lines, inline fields) and rejects
tunes that change key.
"""
import re

LETTERS = "CDEFGAB"
NATURAL = (0, 2, 4, 5, 7, 9, 11)  # semitones of C D E F G A B above C
_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
MODE_FIFTHS = {"": 0, "m": -3, "mix": -1, "dor": -2, "phr": -4, "lyd": 1, "loc": -5}
_ACCIDENTALS = {"^^": 2, "^": 1, "=": 0, "_": -1, "__": -2}
_WRITE = {v: k for k, v in _ACCIDENTALS.items()}
_KEY = re.compile(r"^([A-G])([#b]?)(m|mix|dor|phr|lyd|loc|)$")
_TOKEN = re.compile(r"(?P<bar>\|)|(?P<note>(?P<acc>\^\^|\^|__|_|=)?(?P<letter>[A-Ga-g])"
                    r"(?P<octave>[,']*))")
_NOT_NOTES = re.compile(r"%[^\n]*|\"[^\"\n]*\"|![^!\n]*!|\+[^+\n]*\+|\[[A-Za-z]:[^\]\n]*\]")
_FIELD_LINE = re.compile(r"^[A-Za-z]:")


def parse_key(key: str) -> tuple[str, int, str]:
  """"F#m" -> (tonic letter "F", tonic alteration +1, mode "m"); ValueError if not a key."""
  match = _KEY.match(key)
  if not match:
    raise ValueError(f"key must be a tonic A-G, optional #/b and a mode among "
                     f"{sorted(MODE_FIFTHS)}, got {key!r}")
  letter, accidental, mode = match.groups()
  return letter, {"": 0, "#": 1, "b": -1}[accidental], mode


def fifths(key: str) -> int:
  """Sharps (> 0) or flats (< 0) of the key's signature."""
  letter, alteration, mode = parse_key(key)
  return _LETTER_FIFTHS[letter] + 7 * alteration + MODE_FIFTHS[mode]


def signature(key: str) -> dict[str, int]:
  """{letter: alteration} of the key signature, e.g. "D" -> F and C sharp (+1)."""
  n = fifths(key)
  if abs(n) > 7:
    raise ValueError(f"key {key!r} needs {abs(n)} {'sharps' if n > 0 else 'flats'}; at most 7")
  sig = dict.fromkeys(LETTERS, 0)
  for letter in ("FCGDAEB" if n > 0 else "BEADGCF")[:abs(n)]:
    sig[letter] = 1 if n > 0 else -1
  return sig


def _tonic_pitch(key: str) -> int:
  letter, alteration, _ = parse_key(key)
  return NATURAL[LETTERS.index(letter)] + alteration


def transposed_key(key: str, semitones: int) -> str:
  """The key of the same mode `semitones` away, spelled with the fewest sharps or flats."""
  _, _, mode = parse_key(key)
  pitch = (_tonic_pitch(key) + semitones) % 12
  spellings = [letter + accidental + mode for letter in LETTERS
               for accidental, alteration in (("", 0), ("#", 1), ("b", -1))
               if (NATURAL[LETTERS.index(letter)] + alteration) % 12 == pitch]
  return min(spellings, key=lambda k: (abs(fifths(k)), fifths(k)))


def _letter_steps(source: str, target: str, semitones: int) -> int:
  """Letters to move so that the tonic moves by exactly `semitones`."""
  steps = (LETTERS.index(target[0]) - LETTERS.index(source[0])) % 7
  for d in (steps, steps - 7, steps + 7, steps - 14):
    octave, index = divmod(LETTERS.index(source[0]) + d, 7)
    moved = 12 * octave + NATURAL[index] + parse_key(target)[1]
    if moved - _tonic_pitch(source) == semitones:
      return d
  raise ValueError(f"cannot move key {source!r} to {target!r} by {semitones} semitones")


def _note_text(accidental: str, index: int) -> str:
  """ABC for diatonic index 7·octave + letter (octave 0 = C4..B4, written in upper case)."""
  octave, letter = divmod(index, 7)
  if octave >= 1:
    return accidental + LETTERS[letter].lower() + "'" * (octave - 1)
  return accidental + LETTERS[letter] + "," * -octave


def transpose(body: str, key: str, semitones: int) -> tuple[str, str]:
  """(body transposed by `semitones`, its new key) for notes in `key`; ValueError when a note
  would need more than a double sharp or flat, or an accidental stands alone."""
  target = transposed_key(key, semitones)
  steps = _letter_steps(key, target, semitones)
  source_sig, target_sig = signature(key), signature(target)
  source_bar, target_bar = {}, {}
  out, last = [], 0
  for match in _TOKEN.finditer(body):
    between = body[last:match.start()]
    if re.search(r"[\^_=]", between):
      raise ValueError(f"an accidental without a note in {between!r}")
    out.append(between)
    last = match.end()
    if match.group("bar"):
      source_bar, target_bar = {}, {}
      out.append("|")
      continue
    letter = match.group("letter")
    marks = match.group("octave")
    octave = (1 if letter.islower() else 0) + marks.count("'") - marks.count(",")
    index = 7 * octave + LETTERS.index(letter.upper())
    if match.group("acc"):
      source_bar[index] = _ACCIDENTALS[match.group("acc")]
    alteration = source_bar.get(index, source_sig[letter.upper()])
    pitch = 12 * octave + NATURAL[index % 7] + alteration + semitones
    new_index = index + steps
    new_octave, new_letter = divmod(new_index, 7)
    needed = pitch - 12 * new_octave - NATURAL[new_letter]
    if abs(needed) > 2:
      raise ValueError(f"note {match.group(0)!r} would need an alteration of {needed}")
    written = ""
    current = target_bar.get(new_index, target_sig[LETTERS[new_letter]])
    if match.group("acc") or needed != current:
      written = _WRITE[needed]
      target_bar[new_index] = needed
    out.append(_note_text(written, new_index))
  if re.search(r"[\^_=]", body[last:]):
    raise ValueError(f"an accidental without a note in {body[last:]!r}")
  out.append(body[last:])
  return "".join(out), target


def clean_body(body: str) -> str | None:
  """The notes of a tune body: comments, "chord symbols", !decorations!, +decorations+,
  inline fields and field lines (lyrics, parts, ...) removed; None if the tune changes key."""
  if re.search(r"\[K:|^K:", body, re.M):
    return None
  lines = [_NOT_NOTES.sub("", line) for line in body.split("\n")
           if not _FIELD_LINE.match(line)]
  return "\n".join(line.rstrip() for line in lines if line.strip())


def cut_at_bar(body: str, max_length: int) -> str:
  """The longest prefix of `body` of at most `max_length` characters that ends at a bar line
  (the whole body if it is short enough; "" if no bar line comes early enough)."""
  if len(body) <= max_length:
    return body
  end = body.rfind("|", 0, max_length)
  return body[: end + 1] if end >= 0 else ""
