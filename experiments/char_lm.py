"""The character-level language model (the course's "hello" example at scale): an LSTM reads
folk tunes in ABC notation character by character and predicts the next; reported in bits per
character; then it writes new tunes.

    python -m experiments.char_lm --config=experiments/char_lm.py:smoke   # ~1 min on 2 CPU cores
    python -m experiments.char_lm                  # all 10,400 training tunes; est. 4+ h

Trained as `config.task = "next_step"` on `abc_tunes` (whole tunes, headers included, between
`<start>` and `<end>`). `max_train` > 0 keeps only that many of the training tunes that fit in
`pad_multiple` characters (the smoke run); the validation and test splits are always whole.
Samples (temperature, top-k) are printed and written to
sweeps/char_lm[-smoke]/<variant>/samples.abc.
Smoke (measured): 4.11 bits per character after 2 epochs of 600 tunes; header-like lines.
Expected at full size: well under 2 bits per character; plausible headers (T:, M:, L:, K:) and
bars of the right length most of the time.
"""
import dataclasses
import pathlib
import sys

import jax
import ml_collections
import numpy as np

from experiments import runner
from rnn_research import backbones

METRICS = ("test_bits_per_character", "test_nll", "best_epoch", "epochs")


# What the smoke run changes.
SMOKE = {"max_train": 600, "sample_steps": 200, "trial.max_epochs": 2, "trial.patience": 2,
         "trial.learning_rate": 1e-2, "trial.pad_multiple": 256, "trial.model.hidden_size": 64,
         "trial.model.num_layers": 1}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None (full data) or "smoke"."""
  trial = runner.task_trial("next_step", data="abc_tunes", learning_rate=2e-3,
                            eval_batch_size=128, max_epochs=50, patience=5, pad_multiple=64)
  trial.model.update(hidden_size=512, num_layers=2)
  return runner.experiment_config(arg, SMOKE, name="char_lm", variants=("lstm",), trial=trial,
                                  max_train=0, num_samples=3, sample_steps=400,
                                  temperature=0.8, top_k=0)


def variant_config(config, name: str) -> ml_collections.ConfigDict:
  if name not in backbones.RECURRENT:
    raise ValueError(f"variant must be one of {list(backbones.RECURRENT)}, got {name!r}")
  return runner.variant_trial(config, {"model.backbone": name})


def main(config, workdir: str) -> dict:
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.generation import decoding  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks import make_task  # pylint: disable=g-import-not-at-top
  results = {}
  for name in config.variants:
    trial = variant_config(config, name)
    task = make_task(trial)
    if config.max_train:  # the first tunes that fit one padded length (one compiled step)
      short = [i for i in range(len(task.train))
               if len(task.train[i]["text"]) < trial.pad_multiple - 1]
      task = dataclasses.replace(task, train=[task.train[i] for i in short[:config.max_train]])
    results[name] = runner.train_variant(sys.modules[__name__], config, name, workdir, task)
    vocab = data.load_vocabulary("abc_tunes", data_dir=trial.data_dir or None)
    model = runner.best_model(task, trial, pathlib.Path(workdir) / name)
    ids, _ = decoding.sample_tokens(model, jax.random.key(0), config.num_samples,
                                    config.sample_steps, start_id=vocab.start_id,
                                    end_id=vocab.end_id, temperature=config.temperature,
                                    top_k=config.top_k)
    samples = "\n".join(f"X:{i + 1}\n{vocab.decode(row)}\n"
                         for i, row in enumerate(np.asarray(ids)))
    bits = results[name].get("test_bits_per_character", float("nan"))
    runner.write_generated(workdir, name, "samples.abc", samples, f"{bits:.3f} bits per "
                           f"character; samples at temperature {config.temperature}")
  runner.print_table(results, METRICS)
  return results


if __name__ == "__main__":
  runner.entry_point(__name__, __file__)
