"""The "comparison" report section, which the RNN-vs-Transformer study declares
(experiments/rnn_vs_transformer.py): its PNG figures, sample files and summary.

Reads the studies `<study>/<benchmark>-<backbone>-<size>` and each trial's workdir.
Per variant the *best trial* is the one with the lowest validation NLL; its test metric (NLL per
frame for JSB, bits per character for the folk tunes, MSE for the adding problem, NLL per step
and copy accuracy for the copy task) is what the tables and figures show:
- the headline table: each backbone's best trial over sizes, per benchmark;
- per benchmark, test metric against parameters and against training wall time;
- generation latency per token against position, from `benchmarks/results/
  generation_latency.json` (`python -m benchmarks.generation_latency`);
- samples from the best model of each backbone: chorales as piano-roll PNG and ABC text, folk
  tunes as ABC text and, where music21 can read it, a piano roll.
"""
import collections
import dataclasses
import json
import math
import os
import pathlib
import re

import numpy as np

from rnn_research.analysis import records as rec
from rnn_research.analysis import samples as render
from rnn_research.analysis.tables import fmt, markdown_table

LATENCY_FILE = (pathlib.Path(__file__).parents[2] / "benchmarks" / "results"
                / "generation_latency.json")
# benchmark family -> (result key of its test metric, what it is); lower is better for all.
METRICS = {"jsb": ("test_nll", "test NLL (nats per frame)"),
           "abc": ("test_bits_per_character", "test bits per character"),
           "adding": ("test_nll", "test MSE"),
           "copy": ("test_nll", "test NLL (nats per step)")}
BACKBONE_ORDER = ("lstm_V", "lstm_CIFG", "gru", "tcn", "mlp", "transformer")
SAMPLE_FRAMES, SAMPLE_CHARACTERS, SAMPLE_SEED = 64, 600, 0
METRIC_FORMAT = "#.4g"  # 4 significant digits: the solved synthetic tasks reach MSE ~1e-4


@dataclasses.dataclass(frozen=True)
class Trial:
  """One trial of one variant, as the launcher recorded it (None where it has no value)."""
  variant: str
  benchmark: str
  backbone: str
  size: str
  number: int
  status: str
  params: dict
  result: dict
  workdir: str | None
  wall_time: float | None

  @property
  def family(self) -> str:
    return re.sub(r"\d+$", "", self.benchmark)

  @property
  def metric(self) -> float | None:
    value = self.result.get(METRICS[self.family][0])
    return float(value) if value is not None and math.isfinite(value) else None


def _size_value(size: str) -> float:
  return float(size[:-1]) * {"k": 1e3, "m": 1e6}.get(size[-1], 1.0)


def load_trials(sweep_dir: str, url: str, study) -> list[Trial]:
  """Every trial of every declared variant's study (`study`: the declaration) at `url`."""
  import optuna  # pylint: disable=g-import-not-at-top

  trials = []
  for variant in rec.study_variants(study, url):
    benchmark, backbone, size = (variant.split("-") + ["?", "?"])[:3]
    for t in optuna.load_study(study_name=study.study_name(variant),
                               storage=url).get_trials(deepcopy=False):
      status = rec.status(t)
      workdir = t.user_attrs.get("workdir")
      seconds = rec.training_time(os.path.join(sweep_dir, workdir)) if workdir else None
      trials.append(Trial(variant, benchmark, backbone, size, t.number, status, dict(t.params),
                          dict(t.user_attrs), workdir, seconds))
  return trials


def best_trials(trials: list[Trial]) -> dict[str, Trial]:
  """{variant: its completed trial with the lowest validation NLL}."""
  best = {}
  for t in trials:
    valid = t.result.get("valid_nll")
    if t.status != rec.COMPLETED or valid is None or not math.isfinite(valid) or t.metric is None:
      continue
    if t.variant not in best or valid < best[t.variant].result["valid_nll"]:
      best[t.variant] = t
  return best


def _ordered(names) -> list[str]:
  order = {b: i for i, b in enumerate(BACKBONE_ORDER)}
  return sorted(set(names), key=lambda n: (order.get(n, len(order)), n))


def _benchmarks(trials) -> list[str]:
  families = list(METRICS)
  return sorted({t.benchmark for t in trials},
                key=lambda b: (families.index(re.sub(r"\d+$", "", b)),
                               int(re.sub(r"^\D+", "", b) or 0)))


def best_per_backbone(best: dict[str, Trial], benchmark: str) -> dict[str, Trial]:
  """{backbone: its best trial over sizes (by validation NLL)} on one benchmark."""
  out = {}
  for t in best.values():
    if t.benchmark == benchmark and (t.backbone not in out or t.result["valid_nll"]
                                     < out[t.backbone].result["valid_nll"]):
      out[t.backbone] = t
  return {b: out[b] for b in _ordered(out)}


def _cell(t: Trial | None) -> str:
  if t is None:
    return "–"
  extra = (f", {fmt(t.result.get('test_accuracy'), '.0%')} acc." if t.family == "copy"
           and t.result.get("test_accuracy") is not None else "")
  return f"{fmt(t.metric, METRIC_FORMAT)} ({_params(t)}{extra})"


def _params(t: Trial) -> str:
  count = t.result.get("num_params")
  if count is None:
    return "–"
  return f"{count / 1e3:.0f}K" if count < 999_500 else f"{count / 1e6:.2f}M"  # not "1000K"


def headline_table(best: dict[str, Trial], benchmarks: list[str]) -> str:
  """Rows: backbones; columns: benchmarks; cells: the best trial's test metric (its size)."""
  per = {b: best_per_backbone(best, b) for b in benchmarks}
  backbones = _ordered(n for p in per.values() for n in p)
  header = ["backbone"] + [f"{b}: {METRICS[re.sub(r'[0-9]+$', '', b)][1].replace('test ', '')}"
                           for b in benchmarks]
  return markdown_table(header, [[n] + [_cell(per[b].get(n)) for b in benchmarks]
                                 for n in backbones])


def _size_table(best: dict[str, Trial], benchmark: str) -> str:
  rows = sorted((t for t in best.values() if t.benchmark == benchmark),
                key=lambda t: (BACKBONE_ORDER.index(t.backbone) if t.backbone in BACKBONE_ORDER
                               else len(BACKBONE_ORDER), _size_value(t.size)))
  return markdown_table(
      ["variant", "parameters", METRICS[rows[0].family][1], "valid loss", "train time (s)",
       "epochs", "learning rate", "dropout"],
      [[t.variant, f"{t.result.get('num_params', 0):,}", fmt(t.metric, METRIC_FORMAT),
        fmt(t.result.get("valid_nll"), METRIC_FORMAT), fmt(t.wall_time, ".0f"),
        str(t.result.get("epochs", "–")),
        fmt(t.params.get("learning_rate"), ".2e"), fmt(t.params.get("dropout"), ".2f")]
       for t in rows])


def _color(backbone: str) -> str:
  """One colour per backbone in every figure."""
  order = BACKBONE_ORDER.index(backbone) if backbone in BACKBONE_ORDER else len(BACKBONE_ORDER)
  return f"C{order % 10}"


def _log_axis(axis) -> None:
  """A log axis labelled at 1, 2 and 5 times powers of ten, in plain numbers."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
  axis.set_minor_formatter(ticker.NullFormatter())


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def metric_figure(best: dict[str, Trial], completed: dict[str, int], benchmark: str,
                  path: str) -> str:
  """Two panels: the test metric of each variant's best trial against its parameters and
  against its training wall time, a colour per backbone. Each point is the best of its
  variant's `completed` trials (labelled with their count), not a point on a scaling curve,
  so the points are not joined."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  family = re.sub(r"\d+$", "", benchmark)
  for backbone in _ordered(t.backbone for t in best.values() if t.benchmark == benchmark):
    points = [t for t in best.values() if t.benchmark == benchmark and t.backbone == backbone]
    for ax, x in zip(axes, (lambda t: t.result.get("num_params"), lambda t: t.wall_time)):
      shown = [t for t in points if x(t) is not None]
      ax.plot([x(t) for t in shown], [t.metric for t in shown], "o", label=backbone,
              color=_color(backbone))
      for t in shown:
        ax.annotate(f"n={completed.get(t.variant, 0)}", (x(t), t.metric), fontsize=7,
                    xytext=(4, 3), textcoords="offset points", color=_color(backbone))
  baseline = next((t.result.get("baseline_nll") for t in best.values()
                   if t.benchmark == benchmark and t.result.get("baseline_nll") is not None
                   and family != "abc"), None)
  for ax, xlabel in zip(axes, ("parameters", "training wall time (s)")):
    if baseline is not None:
      ax.axhline(baseline, color="0.4", linestyle="--", linewidth=1, label="baseline")
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(METRICS[family][1])
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(benchmark)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def latency_section(out_dir: str, latency_file=LATENCY_FILE) -> list[str]:
  lines = ["## Generation latency per token against position", ""]
  if not os.path.isfile(latency_file):
    return lines + [f"No `{latency_file}`: run `python -m benchmarks.generation_latency`.", ""]
  with open(latency_file) as f:
    result = json.load(f)
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  by_backbone = {}
  for row in result["rows"]:
    by_backbone.setdefault(row["backbone"], []).append(row)
  for backbone in _ordered(by_backbone):
    rows = sorted(by_backbone[backbone], key=lambda r: r["position"])
    ax.plot([r["position"] for r in rows], [r["median_ms"] for r in rows], "o-", label=backbone,
            color=_color(backbone))
  ax.set_xscale("log")
  ax.set_yscale("log")
  _log_axis(ax.yaxis)
  ax.set_xlabel("position of the generated token")
  ax.set_ylabel("median ms per token")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.savefig(os.path.join(out_dir, "latency.png"), dpi=110, bbox_inches="tight")
  plt.close(fig)
  positions = sorted({r["position"] for r in result["rows"]})
  table = markdown_table(
      ["backbone"] + [f"ms at {p}" for p in positions],
      [[b] + [fmt(next((r["median_ms"] for r in by_backbone[b] if r["position"] == p), None))
              for p in positions] for b in _ordered(by_backbone)])
  return lines + [
      f"Measured by `{result.get('command', 'benchmarks/generation_latency.py')}` on "
      f"{result.get('device', '?')} ({result.get('date', '?')}), every backbone in one run: "
      "the median time of one decoding step (batch "
      f"{result.get('batch', '?')}) with the state of a sequence at that position. The "
      "recurrent state, the TCN's buffers and the MLP's window are the same size at every "
      "position; the Transformer's key/value cache holds every earlier step.", "",
      "![Latency per token](latency.png)", "", table, ""]


def _trial_config(sweep_dir: str, trial: Trial):
  """The train config the trial ran with (its workdir's config.json), completed
  (`tasks.complete`)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from rnn_research import tasks  # pylint: disable=g-import-not-at-top
  with open(os.path.join(sweep_dir, trial.workdir, "config.json")) as f:
    return tasks.complete(ml_collections.ConfigDict(json.load(f)))


def cut_note(sweep_dir: str, best: dict[str, Trial], benchmark: str) -> list[str]:
  """Report lines saying to what length the benchmark's sequences were cut
  (task_options.max_length of its best trials' configs); none when they were not."""
  from rnn_research.tasks.next_step import max_length  # pylint: disable=g-import-not-at-top
  configs = [_trial_config(sweep_dir, t)
             for t in best.values() if t.benchmark == benchmark and t.workdir]
  lengths = sorted({max_length(c) for c in configs if c.task == "next_step"} - {0})
  if not lengths:
    return []
  return [f"Every sequence of every split was cut to its first {' or '.join(map(str, lengths))} "
          f"steps (`task_options.max_length`); the metric is that of those steps.", ""]


def _restore_best(sweep_dir: str, trial: Trial):
  """(the trial's config, its task, its model with the best checkpoint's parameters)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rnn_research.checkpoint import Checkpoints  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks import make_task  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(sweep_dir, trial.workdir)
  config = _trial_config(sweep_dir, trial)
  task = make_task(config)
  model = task.make_model(config.model, nnx.Rngs(0))
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads at INFO
  checkpoints = Checkpoints(workdir)
  try:
    params, _ = checkpoints.restore("best", nnx.state(model, nnx.Param))
  finally:
    checkpoints.close()
    logging.set_verbosity(verbosity)
  nnx.update(model, params)
  return config, task, model


def opening_frame(task, seed: int = SAMPLE_SEED):
  """The first frame of a training chorale drawn with `seed`: [1, 1, 88]. A model never learns
  to predict a sequence's first frame (it is not scored), so a sample opens with a real one and
  the model continues it."""
  index = np.random.default_rng(seed).integers(len(task.train))
  return np.asarray(task.train[int(index)]["roll"][:1], np.float32)[None]


def _chorales(sweep_dir, out_dir, best: dict[str, Trial]) -> list[str]:
  import jax  # pylint: disable=g-import-not-at-top
  from rnn_research.generation import decoding  # pylint: disable=g-import-not-at-top
  rolls, lines = {}, []
  for backbone, trial in best.items():
    _, task, model = _restore_best(sweep_dir, trial)
    opening = opening_frame(task)
    drawn = decoding.sample_piano_rolls(model, jax.random.key(SAMPLE_SEED), 1,
                                        SAMPLE_FRAMES - 1, primer=opening)
    roll = np.concatenate([opening[0].astype(np.uint8), np.asarray(drawn)[0]])
    rolls[backbone] = roll
    text = render.roll_to_abc(roll, title=f"{trial.variant} trial {trial.number}")
    with open(os.path.join(out_dir, f"chorale_{backbone}.abc"), "w") as f:
      f.write(text)
    lines += [f"**{backbone}** ({trial.variant}, trial {trial.number}):", "", "```abc",
              text.rstrip(), "```", ""]
  render.plot_piano_rolls(rolls, os.path.join(out_dir, "chorales.png"),
                          title=f"Sampled chorales, {SAMPLE_FRAMES} quarter notes")
  return ["### Chorales (JSB)", "",
          "Each opens with the first frame of a training chorale (the same for every backbone: a "
          "model is never trained to predict a first frame, which is not scored); the model "
          "draws the rest.", "", "![Sampled chorales](chorales.png)", ""] + lines


def _folk_tunes(sweep_dir, out_dir, best: dict[str, Trial]) -> list[str]:
  import jax  # pylint: disable=g-import-not-at-top
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.generation import decoding  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks.next_step import max_length  # pylint: disable=g-import-not-at-top
  rolls, lines = {}, []
  for backbone, trial in best.items():
    config, _, model = _restore_best(sweep_dir, trial)
    vocab = data.load_vocabulary("abc_tunes", data_dir=config.data_dir or None)
    # No longer than the tunes the model was trained on (0: whole tunes).
    steps = min(SAMPLE_CHARACTERS, max_length(config) or SAMPLE_CHARACTERS)
    ids, length = decoding.sample_tokens(model, jax.random.key(SAMPLE_SEED), 1, steps,
                                         start_id=vocab.start_id, end_id=vocab.end_id)
    text = vocab.decode(np.asarray(ids)[0, :int(length[0])])
    with open(os.path.join(out_dir, f"tune_{backbone}.abc"), "w") as f:
      f.write(text)
    roll = render.abc_to_roll(text)
    readable = "read by music21" if roll is not None else "not readable as ABC by music21"
    if roll is not None:
      rolls[backbone] = roll
    lines += [f"**{backbone}** ({trial.variant}, trial {trial.number}; {readable}):", "",
              "```abc", text.rstrip(), "```", ""]
  figure = []
  if rolls:
    render.plot_piano_rolls(rolls, os.path.join(out_dir, "tunes.png"),
                            title="Sampled folk tunes read by music21 (a frame per beat)")
    figure = ["![Sampled folk tunes](tunes.png)", ""]
  return ["### Folk tunes (ABC)", ""] + figure + lines


def samples_section(sweep_dir, out_dir, best: dict[str, Trial]) -> list[str]:
  lines = ["## Samples from the best model of each backbone", "",
           f"Drawn at temperature 1 (seed {SAMPLE_SEED}) from the best trial of each backbone "
           "over sizes (lowest validation NLL).", ""]
  benchmarks = {t.benchmark for t in best.values()}
  if "jsb" in benchmarks:
    lines += _chorales(sweep_dir, out_dir, best_per_backbone(best, "jsb"))
  if "abc" in benchmarks:
    lines += _folk_tunes(sweep_dir, out_dir, best_per_backbone(best, "abc"))
  if not benchmarks & {"jsb", "abc"}:
    lines += ["No completed JSB or folk-tune trial: no samples.", ""]
  return lines


def _summary(best: dict[str, Trial]) -> dict:
  """{variant: its best trial's numbers}."""
  return {v: {"trial": t.number, "num_params": t.result.get("num_params"),
              "valid_nll": t.result.get("valid_nll"), "metric": METRICS[t.family][0],
              "test": t.metric, "test_accuracy": t.result.get("test_accuracy"),
              "wall_time": t.wall_time, "params": t.params}
          for v, t in sorted(best.items())}


def section(sweep) -> list[str]:
  """The section's lines (report.SECTIONS["comparison"]): the headline table, per benchmark the
  metric figure and table, the latency and the samples; writes its figures and samples to
  sweep.out_dir and its numbers to sweep.summary["best_trials"]."""
  trials = load_trials(sweep.dir, sweep.url, sweep.study)
  best = best_trials(trials)
  benchmarks = [b for b in _benchmarks(trials) if any(t.benchmark == b for t in best.values())]
  lines = ["## Headline: each backbone's best trial", "",
           "Test metric of the trial with the lowest validation NLL over all sizes (its "
           "parameters in brackets); lower is better.", ""]
  lines += [headline_table(best, benchmarks) if benchmarks else "No completed trial yet.", ""]
  completed = collections.Counter(t.variant for t in trials if t.status == rec.COMPLETED)
  for benchmark in benchmarks:
    name = f"metric_{benchmark}.png"
    metric_figure(best, completed, benchmark, os.path.join(sweep.out_dir, name))
    lines += [f"## {benchmark}", "", *cut_note(sweep.dir, best, benchmark),
              f"![{benchmark}]({name})", "", _size_table(best, benchmark), ""]
  lines += latency_section(sweep.out_dir)
  lines += samples_section(sweep.dir, sweep.out_dir, best)
  sweep.summary["best_trials"] = _summary(best)
  return lines
