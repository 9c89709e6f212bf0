"""ABC header fields as labels: the key (`K:`) and metre (`M:`) of a tune, normalised, and the
tune's text with them removed (so a classifier must infer them from the notes).

A tune's header runs from its first line to its `K:` line (see `data.abc_tunes`); the body (the
notes) follows. Inline fields such as `[K:D]` or `[M:3/4]` change key or metre mid-tune.
"""
import re

_FIELD_LINE = re.compile(r"^([A-Za-z]):")
_INLINE_FIELD = re.compile(r"\[([A-Za-z]):[^\]\n]*\]")
_KEY = re.compile(r"^([A-Ga-g])([#b]?)\s*([A-Za-z]*)")
# Mode names are case-insensitive and only their first three letters count (ABC 2.1, 3.1.14).
_MODES = {"": "", "maj": "", "ion": "", "m": "m", "min": "m", "aeo": "m", "mix": "mix",
          "dor": "dor", "phr": "phr", "lyd": "lyd", "loc": "loc"}


def split_header(text: str) -> tuple[list[str], str]:
  """(header lines up to and including the first `K:` line, the body after it). Without a
  `K:` line every line is header and the body is empty."""
  lines = text.split("\n")
  for i, line in enumerate(lines):
    if line.startswith("K:"):
      return lines[: i + 1], "\n".join(lines[i + 1:])
  return lines, ""


def remove_fields(text: str, fields: str = "KM") -> str:
  """`text` without the header lines of `fields` (e.g. "KM": key and metre) and without the
  body's inline fields `[K:...]`, `[M:...]` of them."""
  header, body = split_header(text)
  kept = [line for line in header if not (_FIELD_LINE.match(line) and line[0] in fields)]
  body = _INLINE_FIELD.sub(lambda m: "" if m.group(1) in fields else m.group(0), body)
  return "\n".join(kept + ([body] if body else []))


def notes(text: str, drop_inline: str = "KM") -> str:
  """The body of a tune (its notes), without inline fields of `drop_inline`."""
  body = split_header(text)[1]
  return _INLINE_FIELD.sub(lambda m: "" if m.group(1) in drop_inline else m.group(0), body)


def normalize_key(value: str) -> str:
  """`K:` value -> tonic (upper case, `#`/`b`) + mode: "" major, "m" minor, else the 3-letter
  mode: "G" -> "G", "Gmin" -> "Gm", "AMix" -> "Amix", "F# dorian" -> "F#dor". Values that are
  not a tonic and mode (e.g. "none", "HP") are returned stripped."""
  value = value.strip()
  match = _KEY.match(value)
  if not match:
    return value
  tonic, accidental, mode = match.groups()
  mode = mode.lower()
  mode = _MODES.get(mode if mode == "m" else mode[:3])
  if mode is None:
    return value
  return tonic.upper() + accidental + mode


def normalize_meter(value: str) -> str:
  """`M:` value -> "4/4" for "C" (common time), "2/2" for "C|" (cut time), else without spaces."""
  value = "".join(value.split())
  return {"C": "4/4", "C|": "2/2"}.get(value, value)


def field(text: str, name: str, default: str = "") -> str:
  """The value of header field `name` (e.g. "L") of a tune, or `default`."""
  for line in split_header(text)[0]:
    if line.startswith(name + ":"):
      return line[2:].strip()
  return default


def assemble_tune(body: str, key: str, meter: str, title: str = "generated") -> str:
  """A complete ABC tune from generated text: X, T, M, L (taken from a leading `L:` line of
  `body` when there is one) and K header lines, then the notes."""
  unit = "1/8"
  if body.startswith("L:"):
    first, _, body = body.partition("\n")
    unit = first[2:].strip() or unit
  return f"X:1\nT:{title}\nM:{meter}\nL:{unit}\nK:{key}\n{body}\n"
