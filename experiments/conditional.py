"""One-to-many: generate a folk tune from its key and metre. The condition vector (embeddings of
the key and the metre) is the LSTM's first input, as an image vector starts a caption; the tune
follows character by character, from `<start>` to `<end>`, sampled with temperature and top-k.

    python -m experiments.conditional --config=experiments/conditional.py:smoke  # ~1 min, 2 cores
    python -m experiments.conditional                  # all tunes, 2 layers of 256; est. 3 h

The generated tunes are printed as ABC text (header from the condition, notes from the model)
and written to sweeps/conditional[-smoke]/<variant>/generated.abc; paste them into any ABC
player. The table gives the NLL and bits per character of the test tunes.
Smoke (measured): 3.33 bits per character; the tunes have bar lines but little else. Expected
at full size: bars whose note lengths fit the asked metre, and notes that stay in the key.
"""
import pathlib
import sys

import jax
import ml_collections

from experiments import runner

METRICS = ("test_bits_per_character", "test_nll", "best_epoch")


# What the smoke run changes.
SMOKE = {"num_steps": 160, "trial.max_epochs": 3, "trial.patience": 3,
         "trial.task_options.max_train": 1000, "trial.task_options.max_chars": 128,
         "trial.model.hidden_size": 64, "trial.model.num_layers": 1}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None (full data) or "smoke"."""
  trial = runner.task_trial("conditional", data="abc_tunes", max_epochs=50, patience=5,
                            pad_multiple=64)
  trial.model.update(hidden_size=256, num_layers=2)
  return runner.experiment_config(
      arg, SMOKE, name="conditional", variants=("lstm",), trial=trial, temperature=0.8,
      top_k=10, num_steps=300, conditions=(("G", "6/8"), ("D", "4/4"), ("Am", "3/4"),
                                           ("F", "2/4")))


def variant_config(config, name: str) -> ml_collections.ConfigDict:
  if name not in ("lstm", "gru"):
    raise ValueError(f"variant must be 'lstm' or 'gru', got {name!r}")
  return runner.variant_trial(config, {"model.backbone": name})


def main(config, workdir: str) -> dict:
  from rnn_research.tasks import conditional  # pylint: disable=g-import-not-at-top
  results = runner.run(sys.modules[__name__], config, workdir, table=False)
  for name in config.variants:
    trial = variant_config(config, name)
    splits, vocab, keys, meters = conditional.conditional_data(trial)
    task = conditional.conditional_task(splits, vocab, keys, meters, trial)
    model = runner.best_model(task, trial, pathlib.Path(workdir) / name)
    asked = [(k, m) for k, m in config.conditions if k in keys and m in meters]
    tunes = conditional.generate_tunes(model, vocab, keys, meters, asked, jax.random.key(0),
                                       num_steps=config.num_steps,
                                       temperature=config.temperature, top_k=config.top_k)
    runner.write_generated(workdir, name, "generated.abc", "\n".join(tunes),
                           f"tunes generated at temperature {config.temperature}, top-k "
                           f"{config.top_k} (keys {keys}, metres {meters})")
  runner.print_table(results, METRICS)
  return results


if __name__ == "__main__":
  runner.entry_point(__name__, __file__)
