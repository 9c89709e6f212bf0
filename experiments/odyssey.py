"""LSTM: A Search Space Odyssey (Greff et al. 2017) on JSB Chorales: the vanilla LSTM and its
eight variants, an independent random search of the paper's space for each.

    # the README's main job: 9 variants x 2 trials, 3 epochs each, built-in data; ~3 min on 2 cores
    python -m launch.local --study=experiments/odyssey.py:smoke
    # the reproduction on 2 CPU cores: 30 trials per variant on the standard file; measured
    # 12.8 worker-hours (21 trials per worker-hour), ~6.5 hours on 2 cores
    python -m launch.local --study=experiments/odyssey.py:cpu --sweep_dir=sweeps/odyssey-jsb-cpu
    # the full study (200 trials per variant, as the paper; ~85 CPU-hours at that rate)
    python -m launch.local --study=experiments/odyssey.py

One unidirectional LSTM layer with a sigmoid output layer, SGD with Nesterov momentum and an
update per sequence, early stopping on validation NLL (max 150 epochs, patience 15), as the paper,
on the standard JSB file (`../shared/data/JSB_Chorales.mat` beside this repository; another with
--config.data_path=...; --config.data=nottingham|muse_data|piano_midi_de for the other
Boulanger-Lewandowski sets). Expected (the paper's Fig. 3 and published numbers): the best trials
near 8.5-8.7 nats per frame; NFG and NOAF significantly worse than V; CIFG and NP about as good as
V. The `:cpu` run's report is committed in experiments/results/odyssey-jsb-cpu/ (best trials
8.54-9.18; no variant better than V; only NP significantly worse, over the best 10%).
"""
import pathlib

import ml_collections

from rnn_research import train
from rnn_research.declaration import DEFAULT_REPORT, Param, Study

VARIANTS = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")
STANDARD_JSB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "JSB_Chorales.mat"
# The paper's space; momentum = 1 - one_minus_momentum, the paper's 1 - log-uniform [0.01, 1]
# (momentum in [0, 0.99]), set by `trial_config`.
SPACE = {
    "learning_rate": Param("log", 1e-6, 1e-2),
    "one_minus_momentum": Param("log", 0.01, 1.0, label="1 − momentum"),
    "hidden_size": Param("log_int", 20, 200, key="model.hidden_size"),
    "input_noise": Param("linear", 0.0, 1.0),
}


def declare(config=None) -> Study:
  """The study's declaration (the same for every config; its data is the trial's): the
  paper's variants tested against V, its search space, test NLL, and the paper's conclusions
  checked first."""
  del config
  return Study(
      name="odyssey", title="LSTM: A Search Space Odyssey",
      variants={v: {"model.backbone": "lstm", "model.variant": v} for v in VARIANTS},
      baseline="V", space=SPACE, metric="nll", unit="nats per frame",
      report=("paper", *DEFAULT_REPORT),
      pack_shared=("hidden_size",))  # a pack's trials share a hidden size: one set of shapes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None (the full study), "cpu" (30 trials per variant, hours on 2 cores) or "smoke"
  (minutes on a laptop CPU, on the built-in chorales)."""
  trial = train.default_config()
  trial.update(data="jsb_standard", data_path=str(STANDARD_JSB),
               length_buckets=4)  # padded lengths fitted to the data: 4 programs a pack
  # pack_size > 1: this many trials of a variant share a hidden size and train as one program
  config = declare().config(trial, trials_per_variant=200, pack_size=1)
  with config.unlocked():
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
  return config


def trial_config(config, variant: str, params: dict, seed: int) -> ml_collections.ConfigDict:
  """The train config of one trial of `variant` with sampled `params` and its own `seed`: the
  declaration's, with momentum = 1 - one_minus_momentum."""
  trial = ml_collections.ConfigDict(config.trial.to_dict())
  trial.seed = seed
  trial.update_from_flattened_dict(
      {"model.backbone": "lstm", "model.variant": variant,
       "model.hidden_size": int(params["hidden_size"]),
       "learning_rate": float(params["learning_rate"]),
       "momentum": 1.0 - float(params["one_minus_momentum"]),
       "input_noise": float(params["input_noise"])})
  trial.lock()
  return trial
