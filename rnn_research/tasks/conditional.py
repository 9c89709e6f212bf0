"""One-to-many conditional generation (`config.task = "conditional"`): a folk tune's notes from
its key and metre (`models.conditional`), reported as NLL per character (and bits per
character); `generate_tunes` writes sampled tunes as ABC text.

config.data: "abc_tunes". Each example's text is its unit-length line `L:...` and its notes;
inputs are `<start>` and the text, targets the text and `<end>`, and `labels` [2] the ids of its
key and metre.
config.task_options (OPTIONS holds the defaults):
  num_keys, num_meters: the most frequent (normalised) keys and metres of the training
    split are the conditions; tunes with others are left out.
  max_chars: each tune's notes are cut at their last bar line before this many characters.
  max_train: at most this many training tunes (0 = all).
"""
import numpy as np

from rnn_research import metrics
from rnn_research.models.conditional import CONFIG_KEYS as MODEL_KEYS
from rnn_research.models.conditional import ConditionalGenerator
from rnn_research.tasks import register
from rnn_research.tasks.base import Task
from rnn_research.tasks.classify import most_frequent
from rnn_research.tasks.base import eval_batches

OPTIONS = dict(num_keys=8, num_meters=6, max_chars=256, max_train=0)


def tune_examples(source, max_chars: int) -> list[dict]:
  """{"text": "L:<unit>\\n<notes>", "key", "meter"} of every tune of `source` with notes."""
  from rnn_research.data import abc_headers, transpose  # pylint: disable=g-import-not-at-top
  out = []
  for i in range(len(source)):
    tune = source[i]
    body = transpose.cut_at_bar(abc_headers.notes(tune["text"]).strip(), max_chars)
    if body:
      out.append({"text": f"L:{abc_headers.field(tune['text'], 'L', '1/8')}\n{body}",
                  "key": abc_headers.normalize_key(tune["key"]),
                  "meter": abc_headers.normalize_meter(tune["meter"])})
  return out


def conditional_task(splits: dict, vocab, keys, meters, config) -> Task:
  """The Task of lists of {"text", "key", "meter"} per split (keys and meters among those
  given; their index is the condition's id)."""
  key_ids = {name: i for i, name in enumerate(keys)}
  meter_ids = {name: i for i, name in enumerate(meters)}

  def transform(example):
    ids = vocab.encode(example["text"], add_start=True, add_end=True)
    labels = np.array([key_ids[example["key"]], meter_ids[example["meter"]]], np.int32)
    return {"inputs": ids[:-1], "targets": ids[1:], "labels": labels}

  def make_model(model_config, rngs):
    return ConditionalGenerator(model_config, len(vocab), (len(keys), len(meters)), rngs=rngs)

  def loss(model, batch):
    logits = model(batch["inputs"], batch["lengths"], batch["labels"])
    return metrics.character_nll(logits, batch["targets"], batch["mask"])

  return Task(splits["train"], eval_batches(splits, config, transform), transform, make_model,
              loss, bits_per_character=True)


def conditional_data(config):
  """(splits of examples, vocabulary, keys, metres) for `conditional_task`."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks import check  # pylint: disable=g-import-not-at-top
  check(config)
  options = config.task_options
  data_dir = config.data_dir or None
  splits = {split: tune_examples(data.load("abc_tunes", split, data_dir=data_dir),
                                 options.max_chars)
            for split in ("train", "validation", "test")}
  if options.max_train:
    splits["train"] = splits["train"][:options.max_train]
  keys = most_frequent([{"label": e["key"]} for e in splits["train"]], options.num_keys)
  meters = most_frequent([{"label": e["meter"]} for e in splits["train"]], options.num_meters)
  splits = {split: [e for e in examples if e["key"] in keys and e["meter"] in meters]
            for split, examples in splits.items()}
  return splits, data.load_vocabulary("abc_tunes", data_dir=data_dir), keys, meters


@register("conditional", options=OPTIONS, model=MODEL_KEYS, data=("abc_tunes",))
def conditional_builder(config) -> Task:
  splits, vocab, keys, meters = conditional_data(config)
  return conditional_task(splits, vocab, keys, meters, config)


def generate_tunes(model, vocab, keys, meters, conditions, key, *, num_steps: int = 300,
                   temperature: float = 1.0, top_k: int = 0) -> list[str]:
  """ABC tunes sampled from a trained `ConditionalGenerator`, one per (key, metre) pair of
  `conditions`."""
  from rnn_research.data.abc_headers import assemble_tune  # pylint: disable=g-import-not-at-top
  labels = np.array([[keys.index(k), meters.index(m)] for k, m in conditions], np.int32)
  ids, _ = model.generate(key, labels, num_steps=num_steps, start_id=vocab.start_id,
                          end_id=vocab.end_id, temperature=temperature, top_k=top_k)
  return [assemble_tune(vocab.decode(row), k, m, title=f"generated in {k}, {m}")
          for row, (k, m) in zip(np.asarray(ids), conditions)]
