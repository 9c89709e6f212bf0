"""Trains one trial of any experiment, without a sweep, and prints its result.

    python -m rnn_research.main --config=experiments/odyssey.py:smoke --workdir=/tmp/trial
    python -m rnn_research.main --config=experiments/rnn_vs_transformer.py:smoke \
        --variant=jsb-gru-20k --seed=3 --workdir=/tmp/gru --config.trial.max_epochs=5

`--config` is an experiment file (flags like --config.trial.max_epochs=5 override it); the
trial is `rnn_research.experiment.one_trial`'s: a study's variant with params drawn from its
search space by --seed, a task-shape experiment's variant, or the config itself. The workdir
is a sweep trial's (config.json, checkpoints, metrics.jsonl, result.json): running the command
again resumes it.
"""
import json

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "The trial's directory.")
_VARIANT = flags.DEFINE_string("variant", None, "Default: the experiment's first variant.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the trial and the draw of its params.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from rnn_research import experiment, train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint file at INFO
  path = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")[0]
  trial = experiment.one_trial(experiment.load_module(path), _CONFIG.value, _VARIANT.value,
                               _SEED.value)
  print(f"devices: {jax.devices()}\ntrial config:\n{trial}", flush=True)
  print(json.dumps(train.train_and_evaluate(trial, _WORKDIR.value), indent=1))


if __name__ == "__main__":
  app.run(main)
