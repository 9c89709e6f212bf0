"""Many-to-many with different lengths: encoder–decoder LSTMs with Bahdanau (additive) or Luong
(multiplicative) attention, or none, trained with teacher forcing; decoded greedily and with
beam search. Tasks with checkable answers: reversing, sorting and adding strings, and
transposing a folk tune to another key.

    python -m experiments.seq2seq --config=experiments/seq2seq.py:smoke   # ~1 min, 2 CPU cores
    python -m experiments.seq2seq            # reverse and add x 3 attentions + transpose; est. 3 h
    python -m experiments.seq2seq --config.variants="('transpose-luong',)"

Variants `<task>-<attention>`: task `reverse`, `sort`, `add` (strings of 1-8 letters or digits)
or `transpose` (folk tunes cut to ~120 characters); attention `bahdanau`, `luong` or `none`.
After training, the best model decodes the test split greedily and with a beam of
`beam_size`; the table shows both exact-match accuracies and a few decoded examples follow.
Smoke (measured): reverse-bahdanau, 3 epochs of 2,000 strings: 100% exact matches on the test
split, greedy and beam. Expected at full size: near 100% for reversing and adding with attention;
without it, long strings fail (one vector must hold the whole source).
"""
import pathlib
import sys

import ml_collections
import numpy as np
from flax import nnx

from experiments import runner

METRICS = ("test_sequence_accuracy", "beam_sequence_accuracy", "test_token_accuracy",
           "test_nll", "best_epoch")
TASKS = {"reverse": "reverse", "sort": "sort", "add": "add", "transpose": "abc_transpose"}
ATTENTIONS = ("bahdanau", "luong", "none")


# What the smoke run changes.
SMOKE = {"variants": ("reverse-bahdanau",), "trial.max_epochs": 4, "trial.patience": 4,
         "trial.learning_rate": 1e-2, "trial.task_options.train_size": 2000,
         "trial.task_options.eval_size": 200, "trial.task_options.max_length": 6,
         "trial.model.hidden_size": 32}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None (the comparison) or "smoke"."""
  trial = runner.task_trial("seq2seq", data="reverse", eval_batch_size=250, max_epochs=40,
                            patience=5, pad_multiple=8)
  trial.task_options.update(train_size=20000, eval_size=1000)
  trial.model.update(hidden_size=128, bidirectional=True)
  variants = tuple(f"{t}-{a}" for t in ("reverse", "add") for a in ATTENTIONS)
  return runner.experiment_config(arg, SMOKE, name="seq2seq", beam_size=4, examples=3,
                                  variants=variants + ("transpose-luong",), trial=trial)


def variant_config(config, name: str) -> ml_collections.ConfigDict:
  task, _, attention = name.partition("-")
  if task not in TASKS or attention not in ATTENTIONS:
    raise ValueError(f"variant must be <{'|'.join(TASKS)}>-<{'|'.join(ATTENTIONS)}>, "
                     f"got {name!r}")
  return runner.variant_trial(config, {"data": TASKS[task], "model.attention": attention})


def decode_test(model, task, vocab, beam_size: int):
  """(greedy exact-match accuracy, beam exact-match accuracy, [(source, target, greedy, beam)])
  over the test split."""
  greedy = nnx.jit(lambda m, src, n, width: m.greedy(src, n, start_id=vocab.start_id,
                                                      end_id=vocab.end_id, max_length=width),
                   static_argnums=3)
  beam = nnx.jit(lambda m, src, n, width: m.beam_search(
      src, n, beam_size=beam_size, start_id=vocab.start_id, end_id=vocab.end_id,
      max_length=width), static_argnums=3)
  hits, rows, examples = np.zeros(2), 0, []
  for batch in task.eval_batches["test"]:
    targets, width = batch["targets"], batch["targets"].shape[1]
    decoded = [np.asarray(greedy(model, batch["inputs"], batch["source_lengths"], width)[0]),
               np.asarray(beam(model, batch["inputs"], batch["source_lengths"], width)[0])]
    hits += [np.all(ids == targets, axis=1).sum() for ids in decoded]
    rows += len(targets)
    for i in range(len(targets)):
      if len(examples) < 8:
        examples.append(tuple(vocab.decode(a) for a in (
            batch["inputs"][i, :batch["source_lengths"][i]], targets[i], *[d[i] for d in decoded])))
  return hits[0] / rows, hits[1] / rows, examples


def main(config, workdir: str) -> dict:
  from rnn_research.tasks import make_task  # pylint: disable=g-import-not-at-top
  results = {}
  for name in config.variants:
    trial = variant_config(config, name)
    results[name] = runner.train_variant(sys.modules[__name__], config, name, workdir)
    task = make_task(trial)
    vocab = _vocabulary(trial)
    model = runner.best_model(task, trial, pathlib.Path(workdir) / name)
    greedy, beam, examples = decode_test(model, task, vocab, config.beam_size)
    results[name]["beam_sequence_accuracy"] = beam
    print(f"{name}: test exact match greedy {greedy:.4f}, beam {config.beam_size} {beam:.4f}")
    for source, target, by_greedy, by_beam in examples[:config.examples]:
      print(f"  source {source!r}\n  target {target!r}\n  greedy {by_greedy!r}\n"
            f"  beam   {by_beam!r}")
  runner.print_table(results, METRICS)
  return results


def _vocabulary(trial):
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.data import strings  # pylint: disable=g-import-not-at-top
  if trial.data == "abc_transpose":
    return data.load_vocabulary("abc_tunes", data_dir=trial.data_dir or None)
  return strings.VOCABULARY


if __name__ == "__main__":
  runner.entry_point(__name__, __file__)
