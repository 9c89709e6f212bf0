"""Per-example transforms that turn stored examples into `inputs`/`targets` for `Loader`.

- `piano_roll_next_step`: `{"roll": [T, 88]}` -> inputs `[T, 88]` = the roll delayed by one
  frame (a zero frame first), targets `[T, 88]` = the roll; every frame is predicted from the
  ones before it, so the summed NLL over T frames is the usual per-sequence score.
- `char_next_step(vocab)`: `{"text": str}` -> ids `<start> text <end>`; inputs are all but the
  last id, targets all but the first, both `[len(text) + 1]`.
- `char_classify(vocab, label_ids, label_key)`: text ids as inputs and a class id as target.
- `cropped(transform, max_length)`: `transform` with its sequences cut to the first `max_length`
  steps (for models with a bounded context, e.g. full attention over long folk tunes).
"""

from typing import Any, Callable

import numpy as np

from rnn_research.data.vocabulary import Vocabulary

Example = dict[str, Any]


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def piano_roll_next_step(example: Example) -> Example:
  """`roll [T, 88]` -> `inputs [T, 88]` float32 (shifted), `targets [T, 88]` float32."""
  roll = np.asarray(example["roll"], np.float32)
  inputs = np.concatenate([np.zeros_like(roll[:1]), roll[:-1]])
  return {"inputs": inputs, "targets": roll}


def char_next_step(vocab: Vocabulary, text_key: str = "text") -> Callable[[Example], Example]:
  """Character language modelling: `inputs`, `targets [len + 1]` int32 ids."""

  def transform(example: Example) -> Example:
    ids = vocab.encode(_text(example[text_key]), add_start=True, add_end=True)
    return {"inputs": ids[:-1], "targets": ids[1:]}

  return transform


def cropped(transform: Callable[[Example], Example],
            max_length: int) -> Callable[[Example], Example]:
  """`transform` whose `inputs` and `targets` (both `[T, ...]`) keep their first `max_length`
  steps: `[min(T, max_length), ...]`."""
  if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
    raise ValueError(f"max_length must be a positive int, got {max_length!r}")

  def transform_and_crop(example: Example) -> Example:
    out = transform(example)
    return out | {key: out[key][:max_length] for key in ("inputs", "targets")}

  return transform_and_crop


def char_classify(
    vocab: Vocabulary, label_ids: dict[str, int], label_key: str, text_key: str = "text"
) -> Callable[[Example], Example]:
  """Many-to-one classification: `inputs [len]` int32 ids, `targets []` int32 class id."""

  def transform(example: Example) -> Example:
    label = _text(example[label_key])
    if label not in label_ids:
      raise ValueError(f"{label_key} {label!r} is not among the {len(label_ids)} known labels")
    return {
        "inputs": vocab.encode(_text(example[text_key])),
        "targets": np.int32(label_ids[label]),
    }

  return transform
