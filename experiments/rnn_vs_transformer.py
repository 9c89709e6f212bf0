"""Recurrent networks vs masked self-attention vs convolutions vs a sliding-window MLP, at
matched parameter counts, on the same data with the same training budget.

    # smoke: JSB Chorales and the adding problem (T = 50), five backbones at ~20K parameters,
    # one trial each, 2 epochs: ~250 CPU-seconds, 5 minutes on 2 shared cores (load 5)
    python -m launch.local --study=experiments/rnn_vs_transformer.py:smoke --workers=2
    # cpu: the README's table. JSB (the standard file, trained to early stopping), the adding
    # and copy tasks at T = 100 (50K and 200K parameters) and the folk tunes (50K) on CPU
    # budgets, six backbones, 4 trials each (168 trials in 84 packs)
    python -m launch.local --study=experiments/rnn_vs_transformer.py:cpu --workers=2
    # its JSB column alone (48 trials in 1 h 46 min on 2 cores, 2026-11-30), as in the README
    python -m launch.local --study=experiments/rnn_vs_transformer.py:cpu \
        --config.variants="$(python -c 'from experiments.rnn_vs_transformer import variants; \
                             print(variants(["jsb"], sizes=["50k", "200k"]))')" \
        --sweep_dir=sweeps/rnn_vs_transformer-jsb-cpu
    # the full study: 10 benchmarks x 6 backbones x 3 sizes, 8 trials each (1440 trials; not run
    # yet: weeks of CPU, GPU work); restrict it with --config.variants, e.g. JSB only:
    python -m launch.local --study=experiments/rnn_vs_transformer.py --workers=8 \
        --config.variants="$(python -c 'from experiments.rnn_vs_transformer import variants; \
                             print(variants(["jsb"]))')"

A variant is `<benchmark>-<backbone>-<size>`, e.g. `jsb-transformer-200k`:
- benchmarks: `jsb` (JSB Chorales, NLL per frame: the standard file beside this repository,
  another with --config.data_path=...; `--config.jsb_data=music21` for the chorales of music21,
  no file), `abc` (folk tunes cut to their
  first 512 characters, bits per character), `adding<T>` (the adding problem, MSE) and
  `copy<T>` (the copy task, NLL per step) at T = 100, 200, 500, 1000;
- backbones: `lstm_V` (the Odyssey vanilla LSTM), `lstm_CIFG` (its cheapest variant as good as
  V: coupled input and forget gates), `gru`, `tcn` (Bai et al. 2018; as many blocks as make its
  receptive field cover the sequence), `mlp` (a window of 8 steps), `transformer` (2 pre-LN
  blocks, 4 heads, rotary positions);
- sizes: a parameter count (`50k`, `200k`, `1m`), met by choosing the width
  (`rnn_research.backbones.sizing.match_width` on the real model).
Each variant is an Optuna study (`rnn_vs_transformer/<variant>`) with a random search over the
learning rate (Adam) and dropout (a recurrent backbone's on its outputs before the read-out,
`dropout_key`). The report (`rnn_research.analysis.comparison`) plots the test
metric against parameters and against training time, the generation latency per token against
position (from `benchmarks/results/generation_latency.json`), and samples of the best models.
Expected (published): on JSB, LSTMs near 8.5 nats per frame and Bai et al.'s TCN 8.10 on the
standard file; on the long copy and adding tasks the MLP and short-window models stay at the
baseline while the LSTM, GRU and Transformer solve them. Measured (`:cpu` JSB column, 2026-11-30,
the best trial of each backbone over both sizes): lstm_V 8.33, lstm_CIFG 8.36, GRU 8.52, TCN
8.34, MLP 8.64, Transformer 8.33 nats per frame.
"""
import functools
import json
import re

import ml_collections

from experiments.odyssey import STANDARD_JSB
from rnn_research import backbones, train
from rnn_research.declaration import Param, Study

BENCHMARKS = ("jsb", "abc") + tuple(f"{task}{length}" for task in ("adding", "copy")
                                    for length in (100, 200, 500, 1000))
# backbone -> its model config where it differs from the backbone's declared defaults
# (rnn_research.backbones; hidden_size is chosen per size, num_layers of the TCN per length)
BACKBONES = {
    "lstm_V": dict(backbone="lstm", variant="V"),
    "lstm_CIFG": dict(backbone="lstm", variant="CIFG"),
    "gru": dict(backbone="gru"),
    "tcn": dict(backbone="tcn"),
    "mlp": dict(backbone="mlp", num_layers=2),
    "transformer": dict(backbone="transformer", num_layers=2, positions="rotary"),
}
SIZES = ("50k", "200k", "1m")
# Adam's learning rate and the dropout rate.
# The dropout rate's model key depends on the backbone (`dropout_key`). Below 5e-4 a JSB trial
# does not converge within JSB_TRAINING's 500 epochs (at 1e-4, batch 32, a 50K LSTM was at 10.8
# nats after 300 epochs; 55 of the polyphonic recipes' 56 trials in this range stopped early).
SPACE = {"learning_rate": Param("log", 5e-4, 1e-2), "dropout": Param("linear", 0.0, 0.5)}
# How a JSB trial trains, the polyphonic recipes' (experiments/polyphonic.py) and both studies'
# on the standard file: batch 8, clipped at norm 5, early stopping on validation NLL (patience
# 20, at most 500 epochs), batches padded to 4 lengths fitted to the data.
JSB_TRAINING = dict(batch_size=8, clip_norm=5.0, eval_batch_size=128, max_epochs=500,
                    patience=20, length_buckets=4)
# The longest sequence of each benchmark, which the TCN's receptive field covers. The folk tunes
# are cut to their first 512 characters (task_options.max_length), which leaves 95% of the
# training tunes whole (488 of 10,431 are longer, up to 2,179): full attention over the longest
# does not fit in 24 GiB, and every backbone then sees the same context.
JSB_MAX_LENGTH, ABC_MAX_LENGTH = 160, 512
TCN_MAX_BLOCKS = 10
_VARIANT = re.compile(r"^(jsb|abc|adding\d+|copy\d+)-([A-Za-z_]+)-(\d+)([km])$")


def variants(benchmarks=BENCHMARKS, backbones=tuple(BACKBONES), sizes=SIZES) -> tuple[str, ...]:
  """Every `<benchmark>-<backbone>-<size>` of the given lists."""
  return tuple(f"{b}-{n}-{s}" for b in benchmarks for n in backbones for s in sizes)


def parse_variant(name: str) -> tuple[str, str, int]:
  """`jsb-gru-200k` -> ("jsb", "gru", 200000); ValueError naming the valid forms."""
  match = _VARIANT.match(name) if isinstance(name, str) else None
  if not match or match.group(2) not in BACKBONES:
    raise ValueError(f"variant must be <benchmark>-<backbone>-<size> with a benchmark jsb, abc, "
                     f"adding<T> or copy<T>, a backbone of {sorted(BACKBONES)} and a size like "
                     f"50k or 1m, got {name!r}")
  scale = {"k": 1_000, "m": 1_000_000}[match.group(4)]
  return match.group(1), match.group(2), int(match.group(3)) * scale


def check_variant(name: str) -> None:
  """Accepts any `<benchmark>-<backbone>-<size>` to run, declared or not (--config.variants)."""
  parse_variant(name)


def declare(config) -> Study:
  """The study's declaration for `config`: its variants (config.variants, each checked), the
  space, and the comparison report (rnn_research.analysis.comparison) in place of t-tests
  against a baseline (the variants differ in benchmark as well as backbone). Each variant's
  settings are its benchmark's task and its backbone's model (`trial_config` adds the
  width and the TCN's depth)."""
  settings = {}
  for name in config.variants:
    benchmark, backbone, _ = parse_variant(name)
    trial = ml_collections.ConfigDict(config.trial.to_dict())
    _benchmark_trial(trial, config, benchmark)
    settings[name] = {"task": trial.task, "model": BACKBONES[backbone]}
  benchmarks = dict.fromkeys(parse_variant(name)[0] for name in config.variants)
  return Study(name="rnn_vs_transformer",
               title="Recurrent networks vs Transformers vs convolutions vs a sliding-window MLP",
               variants=settings, space=SPACE, metric="nll", data=", ".join(benchmarks),
               report=("comparison",),
               pack_shared=("dropout",))  # dropout is part of the compiled program


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None (the full study), "cpu" (the README's table; its JSB column alone takes 1 h 46 min
  on 2 CPU cores) or "smoke" (minutes on a laptop CPU)."""
  trial = train.default_config()
  trial.update(optimizer="adam", batch_size=32, clip_norm=1.0)
  config = ml_collections.ConfigDict(dict(
      variants=variants(),
      jsb_data="jsb_standard",  # the standard file (data_path), or "music21"
      # The training budget of each benchmark (trial keys; the synthetic tasks' data sizes),
      # the same for every backbone and size: at most max_epochs, stopping after `patience`
      # epochs without a better validation metric. JSB trains to convergence (JSB_TRAINING);
      # the folk tunes are ~100x JSB's characters: fewer passes.
      budgets=dict(jsb=JSB_TRAINING,
                   abc=dict(max_epochs=10, patience=8, pad_multiple=32),
                   synthetic=dict(max_epochs=60, patience=8, train_size=10_000,
                                  eval_size=1_000)),
      trial=trial,
  ))
  config.trial.data_path = str(STANDARD_JSB)
  trials_per_variant = 8
  if arg == "cpu":
    # The long sequences (T >= 200) and the 1M models are GPU work; the folk tunes at one size.
    config.variants = (variants(("jsb", "adding100", "copy100"), sizes=("50k", "200k"))
                       + variants(("abc",), sizes=("50k",)))
    trials_per_variant = 4
    # Four padded lengths for the tunes: few programs to compile. JSB trains to convergence;
    # the tunes and the synthetic tasks keep CPU budgets.
    config.budgets.update(abc=dict(max_epochs=1, patience=6, pad_multiple=128),
                          synthetic=dict(max_epochs=12, patience=6, train_size=2_000,
                                         eval_size=500))
  elif arg == "smoke":
    config.variants = variants(("jsb", "adding50"), ("lstm_V", "gru", "tcn", "mlp", "transformer"),
                               ("20k",))
    trials_per_variant = 1
    config.jsb_data = "music21"  # built in: the smoke run needs no file
    config.trial.data_path = ""
    config.budgets.update(jsb=dict(max_epochs=2, patience=2, length_buckets=0, pad_multiple=200),
                          synthetic=dict(max_epochs=2, patience=2, train_size=256,
                                         eval_size=64))
  elif arg is not None:
    raise ValueError(f"unknown config argument {arg!r}; use none (the full study), 'cpu' or "
                     f"'smoke'")
  # pack_size > 1: this many trials of a variant share dropout and train as one program
  study = declare(config).config(
      config.trial, trials_per_variant=trials_per_variant, pack_size=2 if arg == "cpu" else 1,
      jsb_data=config.jsb_data, budgets=config.budgets)
  with study.unlocked():
    study.data_path = study.trial.get_ref("data_path")
    study.data_dir = study.trial.get_ref("data_dir")
  return study


def prepare_data(config) -> None:
  """Builds the datasets the variants need, once, before the workers start."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks.next_step import DATASETS  # pylint: disable=g-import-not-at-top
  benchmarks = {parse_variant(v)[0] for v in config.variants}
  if "jsb" in benchmarks:
    data.builder(DATASETS[config.jsb_data][0], data_dir=config.data_dir or None,
                 path=config.data_path or None)
  if "abc" in benchmarks:
    data.builder("abc_tunes", data_dir=config.data_dir or None)


def tcn_blocks(length: int, kernel_size: int) -> int:
  """The fewest blocks whose receptive field 1 + 2(k - 1)(2^L - 1) covers `length` steps."""
  blocks = 1
  while 1 + 2 * (kernel_size - 1) * (2 ** blocks - 1) < length and blocks < TCN_MAX_BLOCKS:
    blocks += 1
  return blocks


def _benchmark_trial(trial, config, benchmark: str) -> None:
  """Sets the task, data and budget of `benchmark` on a trial config (the data file,
  config.data_path, is JSB's)."""
  if benchmark != "jsb":
    trial.data_path = ""
  synthetic = re.match(r"^(adding|copy)(\d+)$", benchmark)
  if synthetic:
    budget = config.budgets.synthetic
    trial.task, trial.data = synthetic.group(1), benchmark
    trial.pad_multiple = 1  # every sequence of a synthetic task has the same length
    trial.task_options = dict(length=int(synthetic.group(2)), train_size=budget.train_size,
                              eval_size=budget.eval_size)
    trial.max_epochs, trial.patience = budget.max_epochs, budget.patience
  else:
    trial.task, trial.data = "next_step", config.jsb_data if benchmark == "jsb" else "abc_tunes"
    trial.update(config.budgets[benchmark])
    if benchmark == "abc":
      trial.task_options = dict(max_length=ABC_MAX_LENGTH)


def sequence_length(benchmark: str) -> int:
  """The longest input a benchmark's model reads (the copy task adds 20 steps)."""
  synthetic = re.match(r"^(adding|copy)(\d+)$", benchmark)
  if not synthetic:
    return JSB_MAX_LENGTH if benchmark == "jsb" else ABC_MAX_LENGTH
  return int(synthetic.group(2)) + (20 if synthetic.group(1) == "copy" else 0)


def model_factory(trial):
  """(model_config) -> the trial's model, built without its data (for parameter counts)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rnn_research.models import NextStepModel  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks import synthetic  # pylint: disable=g-import-not-at-top
  if trial.task == "adding":
    return lambda model: synthetic.LastStepRegressor(model, 2, rngs=nnx.Rngs(0))
  if trial.task == "copy":
    units, embed = synthetic.COPY_VOCABULARY, True
  elif trial.data == "abc_tunes":
    from rnn_research import data  # pylint: disable=g-import-not-at-top
    units, embed = len(data.load_vocabulary("abc_tunes", data_dir=trial.data_dir or None)), True
  else:
    units, embed = 88, False
  return lambda model: NextStepModel(model, units, units, embed=embed, rngs=nnx.Rngs(0))


def matched_width(trial, target: int) -> int:
  """The width of the trial's model (its task, data and model config) closest to `target`
  parameters."""
  shape = {k: trial[k] for k in ("task", "data", "data_dir")} | {"model": trial.model.to_dict()}
  return _matched_width(json.dumps(shape, sort_keys=True), target)


def dropout_key(model) -> str:
  """The model key a searched dropout rate sets: a recurrent stack's `dropout` acts between its
  layers only (as PyTorch's), none in one layer, so there it is the outputs' before the
  read-out (`output_dropout`); the TCN, MLP and Transformer drop inside every block."""
  return "output_dropout" if model.backbone in backbones.RECURRENT else "dropout"


@functools.lru_cache(maxsize=None)
def _matched_width(trial_json: str, target: int) -> int:
  """The width of the trial's model closest to `target` parameters (cached per model and data:
  the trials of a variant share it)."""
  from rnn_research.backbones.sizing import match_width  # pylint: disable=g-import-not-at-top
  from rnn_research.backbones.transformer import width_step  # pylint: disable=g-import-not-at-top
  trial = ml_collections.ConfigDict(json.loads(trial_json))
  make, model = model_factory(trial), trial.model

  def build(width):
    model.hidden_size = width
    return make(model)

  step = width_step(model.num_heads, model.positions) if model.backbone == "transformer" else 1
  return match_width(build, target, step=step)


def trial_config(config, variant: str, params: dict, seed: int) -> ml_collections.ConfigDict:
  """The train config of one trial of `variant` with sampled `params` and its own `seed`."""
  benchmark, backbone, target = parse_variant(variant)
  trial = ml_collections.ConfigDict(config.trial.to_dict())
  trial.seed = seed
  _benchmark_trial(trial, config, benchmark)
  trial.model = backbones.complete(BACKBONES[backbone])
  if backbone == "tcn":
    trial.model.num_layers = tcn_blocks(sequence_length(benchmark), trial.model.kernel_size)
  trial.model.hidden_size = matched_width(trial, target)
  trial.model[dropout_key(trial.model)] = float(params["dropout"])
  trial.learning_rate = float(params["learning_rate"])
  trial.lock()
  return trial
