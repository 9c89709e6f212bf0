"""LSTM: A Search Space Odyssey (Greff et al. 2017) on JSB Chorales: the vanilla LSTM and its
eight variants, an independent random search of the paper's space for each.

    # the README's main job: 9 variants x 2 trials, 3 epochs each, built-in data; ~3 min on 2 cores
    python -m launch.local --study=experiments/odyssey.py:smoke
    # the reproduction on 2 CPU cores: 30 trials per variant on the standard file, ~3 hours
    python -m launch.local --study=experiments/odyssey.py:cpu --sweep_dir=sweeps/odyssey-jsb-cpu
    # the full study (200 trials per variant, as the paper; about 20 CPU-hours, see README)
    python -m launch.local --study=experiments/odyssey.py

One unidirectional LSTM layer with a sigmoid output layer, SGD with Nesterov momentum and an
update per sequence, early stopping on validation NLL (max 150 epochs, patience 15), as the paper,
on the standard JSB file (`../shared/data/JSB_Chorales.mat` beside this repository; another with
--config.data_path=...; --config.data=nottingham|muse_data|piano_midi_de for the other
Boulanger-Lewandowski sets). Expected (the paper's Fig. 3 and published numbers): the best trials
near 8.5-8.7 nats per frame; NFG and NOAF significantly worse than V; CIFG and NP about as good as
V. The `:cpu` run's report is committed in experiments/results/odyssey-jsb-cpu/.
"""
import pathlib

import ml_collections

from rnn_research import train

VARIANTS = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")
# The params the trials of a pack share (one compiled program needs one set of shapes).
PACK_SHARED_PARAMS = ("hidden_size",)
STANDARD_JSB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "JSB_Chorales.mat"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None (the full study), "cpu" (30 trials per variant, hours on 2 cores) or "smoke"
  (minutes on a laptop CPU, on the built-in chorales)."""
  config = ml_collections.ConfigDict(dict(
      name="odyssey",
      variants=VARIANTS,
      trials_per_variant=200,
      pack_size=1,  # > 1: this many trials of a variant share a hidden size and train as one program
      seed=0,  # the sampler's: a rerun of the sweep samples the same trials (launch/study.py)
      max_retries=3,  # retries of a trial that raised or was interrupted (launch/study.py)
      trial=train.default_config(),
  ))
  config.trial.update(data="jsb_standard", data_path=str(STANDARD_JSB),
                      length_buckets=4)  # padded lengths fitted to the data: 4 programs a pack
  # Shortcuts a user sets on the command line: --config.data=standard --config.data_path=...
  config.data = config.trial.get_ref("data")
  config.data_path = config.trial.get_ref("data_path")
  config.data_dir = config.trial.get_ref("data_dir")
  if arg == "cpu":
    config.trials_per_variant = 30
    config.pack_size = 6  # 5 packs, so 5 hidden sizes, per variant
  elif arg == "smoke":
    config.trial.update(data="music21", data_path="")
    config.trials_per_variant = 2
    config.pack_size = 2
    config.trial.max_epochs = 3
    config.trial.patience = 2
    config.trial.length_buckets = 2
    config.trial.pad_multiple = 64  # the evaluation's padding: few programs to compile
  elif arg is not None:
    raise ValueError(f"unknown config argument {arg!r}; use none (the full study), 'cpu' or "
                     "'smoke'")
  config.lock()
  return config


def search_space():
  """{param: Optuna distribution}; a trial's config follows from its params (`trial_config`)."""
  import optuna  # pylint: disable=g-import-not-at-top
  return {
      "learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
      # momentum = 1 - this: the paper's 1 - log-uniform [0.01, 1], i.e. momentum in [0, 0.99]
      "one_minus_momentum": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
      "hidden_size": optuna.distributions.IntDistribution(20, 200, log=True),
      "input_noise": optuna.distributions.FloatDistribution(0.0, 1.0),
  }


def trial_config(config, variant: str, params: dict, seed: int) -> ml_collections.ConfigDict:
  """The train config of one trial of `variant` with sampled `params` and its own `seed`."""
  trial = ml_collections.ConfigDict(config.trial.to_dict())
  trial.seed = seed
  trial.model.backbone, trial.model.variant = "lstm", variant
  trial.model.hidden_size = int(params["hidden_size"])
  trial.learning_rate = float(params["learning_rate"])
  trial.momentum = 1.0 - float(params["one_minus_momentum"])
  trial.input_noise = float(params["input_noise"])
  trial.lock()
  return trial
