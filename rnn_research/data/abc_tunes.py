"""Folk tunes in ABC notation from music21's corpus, for character-level modelling.

The collections `essenFolksong` (European folk songs), `ryansMammoth` (Ryan's Mammoth Collection)
and `oneills1850` (O'Neill's 1850) hold about 11,600 tunes. Each tune (from its `X:` line to
the next) is one example: its text without the `X:` line (the reference number carries no music),
its key (`K:`) and metre (`M:`, "none" when absent) as labels, its title and a stable id
`collection/file/ordinal`. Tunes are split by a hash of the id, 90/5/5 into
train/validation/test, so a tune never straddles splits and adding tunes moves no other.
"""

import pathlib
import re
import zlib

from rnn_research.data.vocabulary import Vocabulary

COLLECTIONS = ("essenFolksong", "ryansMammoth", "oneills1850")
SPLIT_SHARES = {"train": 90, "validation": 5, "test": 5}  # percent
DESCRIPTION = (
    "Folk tunes in ABC notation from music21's corpus (essenFolksong, ryansMammoth, oneills1850),"
    " one tune per example with its key (K:) and metre (M:) as labels, split 90/5/5 by tune."
    " The character vocabulary (metadata 'vocabulary') reserves <pad>=0, <start>=1, <end>=2,"
    " <unk>=3."
)
_FIELD = re.compile(r"^([A-Za-z]):\s*(.*?)\s*(%.*)?$")


def split_of(tune_id: str) -> str:
  """The split of a tune, a fixed function of its id."""
  bucket = zlib.crc32(tune_id.encode("utf-8")) % 100
  for split, share in SPLIT_SHARES.items():
    if bucket < share:
      return split
    bucket -= share
  raise AssertionError("SPLIT_SHARES must sum to 100")


def _header_fields(lines: list[str]) -> tuple[dict[str, str], int]:
  """First value of each header field, and the number of header lines (`K:` ends the header;
  without one, all lines are header)."""
  fields = {}
  for i, line in enumerate(lines):
    match = _FIELD.match(line)
    if match:
      fields.setdefault(match.group(1), " ".join(match.group(2).split()))
      if match.group(1) == "K":
        return fields, i + 1
  return fields, len(lines)


def parse_abc(text: str, source_id: str, collection: str = "") -> list[dict[str, str]]:
  """Splits ABC text into tunes: dicts of `text`, `key`, `meter`, `title`, `collection`, `id`.

  Tunes without a `K:` field or without a body are skipped (they are not valid ABC tunes).
  """
  tunes, current = [], None
  for line in text.splitlines():
    if line.startswith("X:"):
      current = []
      tunes.append(current)
    elif current is not None:
      current.append(line.rstrip())
  out = []
  for ordinal, lines in enumerate(tunes):
    while lines and not lines[-1]:
      lines.pop()
    fields, header_lines = _header_fields(lines)
    if "K" not in fields or header_lines == len(lines):
      continue
    out.append({
        "text": "\n".join(lines),
        "key": fields["K"],
        "meter": fields.get("M", "none") or "none",
        "title": fields.get("T", ""),
        "collection": collection,
        "id": f"{source_id}/{ordinal}",
    })
  return out


def corpus_tunes(collections: tuple[str, ...] = COLLECTIONS) -> list[dict[str, str]]:
  """All tunes of the given music21 corpus collections, in a fixed order."""
  import music21  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(music21.__file__).parent / "corpus"
  tunes = []
  for collection in collections:
    folder = root / collection
    if not folder.is_dir():
      raise FileNotFoundError(f"music21 corpus collection {collection!r} not found at {folder}")
    for path in sorted(folder.glob("*.abc")):
      text = path.read_text(encoding="utf-8", errors="replace")
      tunes.extend(parse_abc(text, f"{collection}/{path.stem}", collection))
  return tunes


def build_vocabulary(tunes: list[dict[str, str]]) -> Vocabulary:
  """The characters of all tunes' texts (all splits, so sampling never meets `<unk>`)."""
  return Vocabulary.from_texts(t["text"] for t in tunes)
