"""Sequence to sequence with attention (`config.task = "seq2seq"`): an encoder reads the source
and an attentional decoder writes the target (`models.seq2seq`), trained with teacher forcing.
Reported: NLL per target token, token_accuracy (teacher forced) and sequence_accuracy (the
greedy decoding equals the whole target).

config.data:
  "reverse", "sort", "add": generated strings (`data.strings`); the answer is checkable.
  "abc_transpose": a folk tune's notes and "<key>><new key>" -> the notes transposed to the new
    key (`data.transpose`), a shift drawn per tune from -5..6 semitones (not 0).
config.task_options (OPTIONS holds the defaults):
  train_size, eval_size: examples of the generated tasks per split.
  min_length, max_length: string lengths (numbers' digits for "add").
  max_chars: abc_transpose cuts each tune at its last bar line before this many characters.
  max_train: at most this many training tunes (abc_transpose; 0 = all).
"""
import jax.numpy as jnp
import numpy as np

from rnn_research.models.seq2seq import CONFIG_KEYS as MODEL_KEYS
from rnn_research.models.seq2seq import Seq2Seq, decoder_inputs
from rnn_research.models.labelling import correct, label_loss
from rnn_research.tasks import register
from rnn_research.tasks.base import Task
from rnn_research.tasks.base import eval_batches

GENERATED = ("reverse", "sort", "add")
DATASETS = GENERATED + ("abc_transpose",)
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
OPTIONS = dict(train_size=5000, eval_size=500, min_length=1, max_length=8, max_chars=120,
               max_train=0)


def transposition_examples(source, max_chars: int, seed: int = 0) -> list[dict]:
  """{"source": "<key>><new key>\\n<notes>", "target": <notes in the new key>} for every tune
  of `source` whose key and notes `data.transpose` handles."""
  from rnn_research.data import abc_headers, transpose  # pylint: disable=g-import-not-at-top
  shifts = [s for s in range(-5, 7) if s]
  out = []
  for i in range(len(source)):
    tune = source[i]
    key = abc_headers.normalize_key(tune["key"])
    body = transpose.cut_at_bar(transpose.clean_body(abc_headers.notes(tune["text"], "")) or "",
                                max_chars)
    if not body:
      continue
    shift = shifts[np.random.default_rng((seed, i)).integers(len(shifts))]
    try:
      new_body, new_key = transpose.transpose(body, key, shift)
    except ValueError:  # not a key with a signature, or notes it cannot write
      continue
    out.append({"source": f"{key}>{new_key}\n{body}", "target": new_body})
  return out


def seq2seq_task(splits: dict, vocab, config) -> Task:
  """The Task of sources of {"source": str, "target": str} examples per split."""
  from rnn_research.data.strings import seq2seq_example  # pylint: disable=g-import-not-at-top
  transform = seq2seq_example(vocab)
  start = vocab.start_id

  def make_model(model_config, rngs):
    return Seq2Seq(model_config, len(vocab), len(vocab), rngs=rngs)

  def logits_of(model, batch):
    return model(batch["inputs"], batch["source_lengths"],
                 decoder_inputs(batch["targets"], start))

  def loss(model, batch):
    targets = batch["targets"]
    return label_loss(logits_of(model, batch), targets, targets != vocab.pad_id)

  def metrics(model, batch):
    targets = batch["targets"]
    ids, _ = model.greedy(batch["inputs"], batch["source_lengths"], start_id=start,
                          end_id=vocab.end_id, max_length=targets.shape[1])
    exact = jnp.all(ids == targets, axis=1)
    return {"token_accuracy": correct(logits_of(model, batch), targets,
                                            targets != vocab.pad_id),
            "sequence_accuracy": (jnp.sum(exact), jnp.asarray(exact.shape[0]))}

  return Task(splits["train"], eval_batches(splits, config, transform), transform, make_model,
              loss, metrics)


@register("seq2seq", options=OPTIONS, model=MODEL_KEYS, data=DATASETS)
def seq2seq_builder(config) -> Task:
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.data import strings  # pylint: disable=g-import-not-at-top
  options = config.task_options
  if config.data in GENERATED:
    sizes = {"train": options.train_size}
    sizes["validation"] = sizes["test"] = options.eval_size
    splits = {split: strings.StringSource(config.data, size, SPLIT_SEEDS[split],
                                          options.min_length, options.max_length)
              for split, size in sizes.items()}
    return seq2seq_task(splits, strings.VOCABULARY, config)
  data_dir = config.data_dir or None
  splits = {}
  for split, seed in SPLIT_SEEDS.items():
    source = data.load("abc_tunes", split, data_dir=data_dir)
    if split == "train" and options.max_train:
      source = [source[i] for i in range(min(options.max_train, len(source)))]
    splits[split] = transposition_examples(source, options.max_chars, seed)
  return seq2seq_task(splits, data.load_vocabulary("abc_tunes", data_dir=data_dir), config)
