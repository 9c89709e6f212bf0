"""Reference recipes for the Boulanger-Lewandowski polyphonic music sets: every backbone trained
to convergence on the standard JSB Chorales, tuned, then trained again with fresh seeds and set
beside the published numbers.

    # 1. the search: 8 random trials per backbone (learning rate, dropout, size), ~2.2 h on 2 cores
    python -m launch.local --study=experiments/polyphonic.py --sweep_dir=sweeps/polyphonic-jsb
    # 2. 3 fresh seeds of each backbone's best trial (launch/reseed.py), then the table, ~50 min
    python -m experiments.polyphonic --sweep_dir=sweeps/polyphonic-jsb \
        --out_dir=experiments/results/polyphonic-jsb
    # another set: --config.data=nottingham|muse_data|piano_midi_de --config.data_path=FILE
    # (the .mat or .pickle file of Boulanger-Lewandowski et al. 2012) in both steps' sweep dir

Backbones (the variants): the vanilla LSTM of the Odyssey (`lstm_V`, peepholes) and PyTorch's
(`lstm_NP`), a GRU, a tanh RNN, a TCN (Bai et al. 2018; its receptive field covers the longest
standard chorale, 160 frames), a sliding-window MLP (8 frames) and a causal Transformer (2 pre-LN
blocks, 4 heads, rotary positions), each with a linear read-out to 88 sigmoid units. Every trial:
Adam, batch 8, gradients clipped at global norm 5, early stopping on validation NLL (patience 20,
at most 500 epochs: the best epoch is not the last), NLL in nats per frame over frames 2..T.
Searched: Adam's learning rate, the dropout rate (a recurrent backbone's on its outputs before
the read-out, `model.output_dropout`; the others' inside every block) and the parameter count,
20K (Chung et al. 2014's models are ~20K) to 300K, met by the width. The table
(experiments/results/polyphonic-jsb/table.md) gives each backbone's test NLL as mean ± std over
the 3 seeds, and the published figures with their sources (PUBLISHED).

Expected (measured on 2 CPU cores, 2026-11-30), test NLL over 3 seeds: lstm_V 8.39 ± 0.04,
lstm_NP 8.40 ± 0.01, GRU 8.55 ± 0.02, tanh RNN 8.62 ± 0.01, TCN 8.44 ± 0.07, MLP 8.59 ± 0.01,
Transformer 8.31 ± 0.03; published: LSTM 8.45, GRU 8.43, RNN 8.91, TCN 8.10 (Bai et al. 2018).
"""
import json
import pathlib

import ml_collections
from absl import app, flags

from experiments import odyssey
from experiments import rnn_vs_transformer as comparison
from launch import reseed
from rnn_research import backbones, train
from rnn_research.analysis import records
from rnn_research.analysis.tables import fmt, markdown_table
from rnn_research.declaration import DEFAULT_REPORT, Param, Study

# backbone -> its model config where it differs from the backbone's declared defaults
BACKBONES = {
    "lstm_V": comparison.BACKBONES["lstm_V"],
    "lstm_NP": dict(backbone="lstm", variant="NP"),
    "gru": comparison.BACKBONES["gru"],
    "rnn": dict(backbone="rnn"),
    "tcn": comparison.BACKBONES["tcn"],
    "mlp": comparison.BACKBONES["mlp"],
    "transformer": comparison.BACKBONES["transformer"],
}
# The comparison's learning rate and dropout (its model key: comparison.dropout_key), and the size.
SPACE = {**comparison.SPACE, "size": Param("log_int", 20_000, 300_000, label="parameters")}

# Published test NLL (nats per frame, frames 2..T) on each set (its TFDS name), by backbone family.
CHUNG = "Chung et al. 2014"
BAI = "Bai et al. 2018"
BOULANGER = "Boulanger-Lewandowski et al. 2012 (RNN)"
# Where each figure comes from (collected with their secondary sources in the research notes,
# ../shared/research/odyssey.md).
SOURCES = {
    CHUNG: "Chung, Gulcehre, Cho & Bengio, Empirical evaluation of gated recurrent neural "
           "networks on sequence modeling, arXiv:1412.3555 (models of ~20K parameters)",
    BAI: "Bai, Kolter & Koltun, An empirical evaluation of generic convolutional and recurrent "
         "networks for sequence modeling, arXiv:1803.01271, Table 1 (JSB ~300K parameters, "
         "Nottingham ~1M)",
    BOULANGER: "Boulanger-Lewandowski, Bengio & Vincent, Modeling temporal dependencies in "
               "high-dimensional sequences, ICML 2012, as listed by a benchmark aggregator; "
               "that the row is their plain RNN is not verified in the paper",
}
PUBLISHED = {
    "jsb_chorales/standard": {CHUNG: {"lstm": 8.67, "gru": 8.54, "rnn": 9.19},
                              BAI: {"lstm": 8.45, "gru": 8.43, "rnn": 8.91, "tcn": 8.10},
                              BOULANGER: {"rnn": 8.71}},
    "nottingham": {BAI: {"lstm": 3.29, "gru": 3.46, "rnn": 4.05, "tcn": 3.07},
                   BOULANGER: {"rnn": 4.46}},
    "muse_data": {BOULANGER: {"rnn": 8.13}},
    "piano_midi_de": {BOULANGER: {"rnn": 8.37}},
}
TABLE_FILE = "table.md"


def declare(config=None) -> Study:
  """The study's declaration: the backbones tested against the vanilla LSTM, the space, NLL."""
  del config
  return Study(name="polyphonic", title="Polyphonic music: every backbone, tuned and converged",
               variants={name: {"model": model} for name, model in BACKBONES.items()},
               baseline="lstm_V", space=SPACE, metric="nll", unit="nats per frame",
               report=DEFAULT_REPORT)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None (the search on the standard JSB file) or "smoke" (minutes on a laptop CPU, on
  the built-in chorales)."""
  trial = train.default_config()
  trial.update(data="jsb_standard", data_path=str(odyssey.STANDARD_JSB), optimizer="adam",
               **comparison.JSB_TRAINING)
  config = declare().config(trial, trials_per_variant=8)
  with config.unlocked():
    # Shortcuts a user sets on the command line: --config.data=nottingham --config.data_path=...
    config.data = config.trial.get_ref("data")
    config.data_path = config.trial.get_ref("data_path")
    config.data_dir = config.trial.get_ref("data_dir")
  if arg == "smoke":
    config.trial.update(data="music21", data_path="", max_epochs=2, patience=2,
                        length_buckets=2)
    config.trials_per_variant = 1
  elif arg is not None:
    raise ValueError(f"unknown config argument {arg!r}; use none (the search) or 'smoke'")
  return config


def trial_config(config, variant: str, params: dict, seed: int) -> ml_collections.ConfigDict:
  """The train config of one trial: the variant's backbone at the width closest to the sampled
  parameter count, with the sampled learning rate and dropout, and its own `seed`."""
  trial = ml_collections.ConfigDict(config.trial.to_dict())
  trial.seed = seed
  trial.model = backbones.complete(BACKBONES[variant])
  if trial.model.backbone == "tcn":
    trial.model.num_layers = comparison.tcn_blocks(comparison.JSB_MAX_LENGTH,
                                                   trial.model.kernel_size)
  trial.model.hidden_size = comparison.matched_width(trial, int(params["size"]))
  trial.model[comparison.dropout_key(trial.model)] = float(params["dropout"])
  trial.learning_rate = float(params["learning_rate"])
  trial.lock()
  return trial


def family(variant: str) -> str:
  """The published figures' name of a variant's backbone: lstm_V -> lstm."""
  return BACKBONES[variant]["backbone"]


def _published(data: str, variant: str) -> list[float | None]:
  """A variant's family's published figure on `data` from each source (None where none)."""
  return [PUBLISHED.get(data, {}).get(source, {}).get(family(variant)) for source in SOURCES]


def results_table(reseeded: dict, data: str, runs: dict) -> str:
  """The markdown table of the reseeded backbones (launch/reseed.py's summary) on `data` (a
  TFDS name) beside the published figures and the mean's difference from the lowest of them;
  `runs` {variant: [(best epoch, epochs, minutes of training) per seed]}."""
  header = ["backbone", "parameters", f"test NLL, mean ± std ({reseeded['seeds']} seeds)",
            *SOURCES, "vs lowest published", "learning rate", "dropout", "best epoch / epochs",
            "minutes per seed"]
  rows = []
  for variant, entry in reseeded["variants"].items():
    published = _published(data, variant)
    lowest = min((figure for figure in published if figure is not None), default=None)
    mean = "diverged" if entry["mean"] is None else (
        f"**{entry['mean']:.2f}** ± {fmt(entry['std'], '.2f')}")
    difference = None if lowest is None or entry["mean"] is None else entry["mean"] - lowest
    rows.append([variant, f"{entry['num_params']:,}", mean,
                 *[fmt(figure, ".2f") for figure in published], fmt(difference, "+.2f"),
                 f"{entry['params']['learning_rate']:.1e}", f"{entry['params']['dropout']:.2f}",
                 ", ".join(f"{best}/{epochs}" for best, epochs, _ in runs[variant]),
                 ", ".join(fmt(minutes, ".0f") for _, _, minutes in runs[variant])])
  return markdown_table(header, rows)


def others_table(data: str) -> str:
  """The published figures on the sets other than `data`, marked as not run here."""
  others = [d for d in PUBLISHED if d != data]
  families = dict.fromkeys(name for figures in PUBLISHED.values() for by_family in figures.values()
                           for name in by_family)
  rows = [[f"{source}: {name}",
           *[fmt(PUBLISHED[d].get(source, {}).get(name), ".2f") for d in others]]
          for source in SOURCES for name in families
          if any(PUBLISHED[d].get(source, {}).get(name) for d in others)]
  return markdown_table(["published (not run here)", *others], rows)


def _seed_runs(sweep_dir: str, variant: str, entry: dict) -> list[tuple]:
  """(best epoch, epochs, minutes of training) of each seed of a variant's reseed.json entry."""
  runs = []
  for seed, result in entry["seeds"].items():
    seconds = records.training_time(str(reseed.run_dir(sweep_dir, variant, seed)))
    runs.append((result.get("best_epoch"), result["epochs"],
                 None if seconds is None else seconds / 60))
  return runs


def write_table(reseeded: dict, sweep_dir: str, out_dir: str) -> pathlib.Path:
  """Writes table.md (the results beside the published figures, the sources) and table.json
  (reseed.json's content with the data set) to `out_dir`."""
  from rnn_research.tasks.next_step import DATASETS  # pylint: disable=g-import-not-at-top
  data = DATASETS[records.load_study(sweep_dir).data][0]
  runs = {variant: _seed_runs(sweep_dir, variant, entry)
          for variant, entry in reseeded["variants"].items()}
  lines = [f"# Polyphonic music recipes on {data}", "",
           f"Test NLL in nats per frame (frames 2..T, summed over the 88 keys) of each backbone's "
           f"best search trial (lowest validation NLL) trained again with seeds "
           f"{reseeded['first_seed']}-{reseeded['first_seed'] + reseeded['seeds'] - 1}, beside "
           "the published figures (– where a source has none).", "",
           results_table(reseeded, data, runs), "", "Sources:", "",
           *[f"- {name}: {text}" for name, text in SOURCES.items()], "",
           others_table(data), ""]
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / TABLE_FILE).write_text("\n".join(lines))
  (out / "table.json").write_text(json.dumps({"data": data, **reseeded}, indent=1) + "\n")
  return out / TABLE_FILE


def main(argv):
  from launch import cli, cores  # pylint: disable=g-import-not-at-top
  del argv
  with cli.bad_input():
    reseeded = reseed.reseed(_SWEEP_DIR.value, _SEEDS.value, cores.default_workers())
    print(f"wrote {write_table(reseeded, _SWEEP_DIR.value, _OUT_DIR.value)}")


if __name__ == "__main__":
  _SWEEP_DIR = flags.DEFINE_string("sweep_dir", "sweeps/polyphonic-jsb", "The search's sweep.")
  _OUT_DIR = flags.DEFINE_string("out_dir", "experiments/results/polyphonic-jsb",
                                 "Where table.md and table.json go.")
  _SEEDS = flags.DEFINE_integer("seeds", 3, "Fresh seeds per backbone.")
  app.run(main)
