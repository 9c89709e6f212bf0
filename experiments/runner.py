"""Runs the task-shape experiments (classify, tagging, seq2seq, conditional, char_lm, features,
tbptt): each variant of a config is one trial (`train_and_evaluate`) in its own workdir, and a
table of their results is printed.

An experiment module has `get_config(arg)` (a ConfigDict with `name`, `variants` and `trial`,
the base trial config; `experiment_config` makes it), `variant_config(config, name) -> trial
config` (`variant_trial`), `METRICS` (the result keys of its table) and, where `run` (train every
variant, print the table) is not all it does, `main(config, workdir)`; this module gives it
`run` and `entry_point`.
"""
import functools
import pathlib
import sys
import time

import ml_collections

from rnn_research import train

# How the task experiments train unless one says otherwise: Adam, clipped at global norm 1.
TRAINING = dict(optimizer="adam", learning_rate=3e-3, clip_norm=1.0, batch_size=32,
                eval_batch_size=256)


def task_trial(task: str, **keys) -> ml_collections.ConfigDict:
  """A trial config of `task` (its declared keys: train.default_config) trained as TRAINING
  says, with PyTorch's LSTM (variant "NP"); `keys` (top-level) override."""
  trial = train.default_config(task)
  trial.update({**TRAINING, **keys})
  trial.model.variant = "NP"
  return trial


def experiment_config(arg: str | None, smoke: dict, **fields) -> ml_collections.ConfigDict:
  """An experiment's `get_config(arg)`: a locked ConfigDict of `fields` (name, variants, trial,
  ...). arg "smoke" applies `smoke`, {dotted key: value} (as `--config.` flags would), and
  appends "-smoke" to the name."""
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown config argument {arg!r}; use none or 'smoke'")
  config = ml_collections.ConfigDict(fields)
  if arg == "smoke":
    config.update_from_flattened_dict({**smoke, "name": f"{config.name}-smoke"})
  config.lock()
  return config


def variant_trial(config, changes: dict) -> ml_collections.ConfigDict:
  """The locked trial config of a variant: config.trial with `changes`, {dotted key: value}."""
  trial = ml_collections.ConfigDict(config.trial.to_dict())
  trial.update_from_flattened_dict(changes)
  trial.lock()
  return trial


def default_workdir(config) -> str:
  return f"sweeps/{config.name}"


def run(module, config, workdir, *, table: bool = True) -> dict[str, dict]:
  """{variant: result} of every variant in config.variants, trained (or read back, if done) in
  `workdir/<variant>`; prints each variant's time and (unless `table` is False) the table."""
  results = {name: train_variant(module, config, name, workdir) for name in config.variants}
  if table:
    print_table(results, module.METRICS)
  return results


def train_variant(module, config, name: str, workdir, task=None) -> dict:
  """The result of variant `name`, trained in `workdir/<name>` (on `task` if given, else the
  one its config names); prints the time it took."""
  start = time.time()
  result = train.train_and_evaluate(module.variant_config(config, name),
                                    pathlib.Path(workdir) / name, task=task)
  print(f"{name}: {time.time() - start:.0f} s", flush=True)
  return result


def print_table(results: dict[str, dict], keys) -> None:
  first = max(len(name) for name in results) + 2
  widths = [max(len(key), 10) + 2 for key in keys]
  print("variant".ljust(first) + "".join(key.rjust(w) for key, w in zip(keys, widths)))
  for name, result in results.items():
    cells = [f"{v:.4f}" if isinstance(v, float) else str(v)
             for v in (result.get(key) for key in keys)]
    print(name.ljust(first) + "".join(c.rjust(w) for c, w in zip(cells, widths)))


def write_generated(workdir, name: str, filename: str, text: str, what: str) -> None:
  """Writes what variant `name` generated to workdir/name/filename and prints it."""
  (pathlib.Path(workdir) / name / filename).write_text(text)
  print(f"{name}: {what}:\n\n{text}")


def best_model(task, trial_config, workdir):
  """The trial's model with the parameters of its best validation epoch."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rnn_research.checkpoint import Checkpoints  # pylint: disable=g-import-not-at-top
  model = task.make_model(trial_config.model, nnx.Rngs(trial_config.seed))
  checkpoints = Checkpoints(workdir)
  try:
    params, _ = checkpoints.restore("best", nnx.state(model, nnx.Param))
  finally:
    checkpoints.close()
  nnx.update(model, params)
  model.eval()
  return model


def entry_point(module_name: str, config_file: str) -> None:
  """`python -m experiments.<name> --config=experiments/<name>.py[:arg] [--workdir=DIR]`."""
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config = config_flags.DEFINE_config_file("config", config_file, "The experiment config.")
  workdir = flags.DEFINE_string("workdir", None, "Default: sweeps/<experiment>[-smoke].")
  module = sys.modules[module_name]

  def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    print(f"config:\n{config.value}")
    run_module = getattr(module, "main", functools.partial(run, module))
    run_module(config.value, workdir.value or default_workdir(config.value))

  app.run(main)
