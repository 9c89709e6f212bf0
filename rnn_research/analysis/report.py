"""Turns a finished or partial Odyssey sweep into `<sweep_dir>/report/report.md` and PNG figures.

    python -m rnn_research.analysis.report --sweep_dir=DIR [--storage=URL]

Reads the per-variant Optuna studies `odyssey/<variant>` (by default from DIR/study.db) and each
trial's `metrics.jsonl` (see records.py), and writes the paper's conclusions checked one by one
(paper.py), its Fig. 3 (box plots of test NLL, variants that differ significantly from V in thick
blue), Fig. 4 (marginal effects), Fig. 5 (fANOVA importance), learning curves, the tables behind
them, `summary.json` with the same numbers for scripts and `trials.csv` with every trial.
About a minute for 9 x 200 trials, most of it fANOVA.
"""
import csv
import dataclasses
import json
import math
import os
import sys

import numpy as np

from rnn_research.analysis import figures
from rnn_research.analysis import importance as imp
from rnn_research.analysis import paper
from rnn_research.analysis import records as rec
from rnn_research.analysis import stats
from rnn_research.analysis import tables
from rnn_research.database import given_url, masked

REPORT_DIR = "report"
MIN_MARGINAL_TRIALS = 5


def _baseline(records: list[rec.TrialRecord]) -> tuple[float | None, list[str]]:
  """The per-key frequency baseline NLL the trials recorded, and notes if they disagree."""
  values = sorted({r.baseline_nll for r in records if r.baseline_nll is not None})
  if not values:
    return None, ["No trial recorded `baseline_nll`: the figures leave the baseline out."]
  if values[-1] - values[0] > 1e-6:
    return float(np.median(values)), [
        f"Trials recorded different baselines ({values[0]:.4f} to {values[-1]:.4f}); "
        "the line shows their median. Were they trained on the same data?"]
  return values[0], []


def _overview(sweep_dir, url, records, summaries, baseline, notes) -> list[str]:
  counts = {s: sum(r.status == s for r in records) for s in rec.STATUSES}
  data = sorted({r.data for r in records if r.data})
  missing = [v for v in rec.VARIANTS if v not in {s.variant for s in summaries}]
  lines = [f"# LSTM: A Search Space Odyssey — {', '.join(data) or 'sweep'} report", "",
           f"- Sweep: `{sweep_dir}` (storage `{masked(url)}`)",
           f"- Trials: {len(records)} in {len(summaries)} variant studies: "
           + ", ".join(f"{n} {s}" for s, n in counts.items()),
           f"- Per-key frequency baseline, test NLL: {tables.fmt(baseline)} nats per frame"]
  if missing:
    lines.append(f"- Variants with no study yet: {', '.join(missing)}")
  if counts[rec.RUNNING]:
    lines.append("- **Partial sweep**: running trials are counted but not analysed.")
  return lines + [f"- {n}" for n in notes] + [""]


def _paper_section(checks: list[paper.Check]) -> list[str]:
  return ["## Compared with the paper", "",
          "Each conclusion of Greff et al. (2017) on JSB Chorales against this run. Significance: "
          f"Welch's t-test against V, Bonferroni-corrected, p < {stats.ALPHA}, over all completed "
          f"trials and over the best {stats.TOP_FRACTION:.0%} (the t-tests below); importance: "
          "fANOVA (below). Every trial is in `trials.csv`.", "", paper.table(checks), ""]


TRIAL_COLUMNS = ("variant", "number", "status", *rec.SEARCH_SPACE, "epochs", "best_epoch",
                 "valid_nll", "test_nll", "num_params", "diverged_step")


def _trials_csv(records: list[rec.TrialRecord], path: str) -> None:
  """Every trial, one row each (TRIAL_COLUMNS; empty where a trial has no value)."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(TRIAL_COLUMNS)
    for r in records:
      values = {**dataclasses.asdict(r), **r.params}
      writer.writerow(["" if values.get(c) is None else values[c] for c in TRIAL_COLUMNS])


def _test_nll_section(out_dir, summaries, comparisons, baseline) -> list[str]:
  lines = ["## Test NLL per variant (Fig. 3)", ""]
  if not any(len(s.ranked) for s in summaries):
    return lines + ["No completed trial with a test NLL yet: box plots and tests skipped.", ""]
  figures.box_plots(summaries, comparisons, baseline, os.path.join(out_dir, "test_nll_boxes.png"))
  m = {p: sum(c.p is not None for c in comparisons[p].values()) for p in stats.POPULATIONS}
  lines += [
      "![Test NLL per variant](test_nll_boxes.png)", "",
      "Boxes span the 25th to 75th percentile, whiskers the whole range; red line = median, "
      f"red dot = mean; dashed line = per-key frequency baseline. Boxes in **thick blue** differ "
      f"significantly from V (Welch's t-test, Bonferroni-corrected p < {stats.ALPHA}). "
      f"The best {stats.TOP_FRACTION:.0%} of a variant's trials are chosen on validation NLL; "
      "the *best trial* is the one with the lowest validation NLL.",
      "", "### Table 1: trials and test NLL (nats per frame)", "", tables.trials_table(summaries),
      "", "### Table 2: Welch's t-test of each variant's mean test NLL against V", "",
      f"Bonferroni: p times the number of variants tested against V ({m['all']} over all trials, "
      f"{m['top']} over the top {stats.TOP_FRACTION:.0%}), capped at 1; Δ mean > 0 means worse "
      f"than V. A variant needs at least {stats.MIN_TEST_SAMPLES} trials in a population to be "
      "tested.", ""]
  if not any(s.variant == rec.BASELINE_VARIANT for s in summaries):
    lines += [f"No study for {rec.BASELINE_VARIANT}: nothing to compare against.", ""]
  return lines + [tables.comparisons_table(summaries, comparisons), ""]


def _importance_section(out_dir, importances) -> list[str]:
  lines = ["## Hyperparameter importance, fANOVA (Fig. 5)", "",
           "Fraction of the variance of test NLL explained by each hyperparameter alone (main "
           "effects) and by their interactions, from a random forest over each variant's completed "
           f"trials (Optuna's FanovaImportanceEvaluator, seed {imp.SEED}; learning rate, hidden "
           "size and 1 − momentum on log axes). fANOVA needs at least "
           f"{imp.MIN_FANOVA_TRIALS} completed trials.", "",
           tables.importance_table(importances), ""]
  if any(r.fractions for r in importances):
    figures.importance_bars(importances, os.path.join(out_dir, "importance.png"))
    lines += ["![fANOVA importance](importance.png)", ""]
  return lines


def _marginals_section(out_dir, summaries) -> list[str]:
  lines = ["## Marginal effects of the hyperparameters (Fig. 4)", "",
           "Each completed trial's test NLL against one hyperparameter (dots), with the median "
           f"in equal-width bins, one per {figures.TRIALS_PER_BIN} trials (3 to 10 bins; log "
           "bins for learning rate and hidden size).", ""]
  for s in summaries:
    usable = [t for t in s.ranked if all(n in t.params for n, _, _ in figures.MARGINAL_PARAMS)]
    if len(usable) < MIN_MARGINAL_TRIALS:
      lines += [f"- {s.variant}: skipped, {len(usable)} completed trials "
                f"(needs {MIN_MARGINAL_TRIALS}).", ""]
      continue
    name = f"marginals_{s.variant}.png"
    figures.marginals(s.variant, usable, os.path.join(out_dir, name))
    lines += [f"![{s.variant} marginals]({name})", ""]
  return lines


def _finite_number(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def _curves_section(out_dir, sweep_dir, summaries, baseline) -> list[str]:
  lines = ["## Learning curves (validation NLL of each variant's best trial)", ""]
  curves, notes = {}, []
  for s in summaries:
    best = s.best
    if best is None:
      notes.append(f"- {s.variant}: no completed trial.")
      continue
    path = os.path.join(sweep_dir, best.workdir or "", rec.METRICS_FILE)
    rows = rec.read_metrics(path) if best.workdir else None
    usable = [r for r in rows or [] if "epoch" in r and _finite_number(r.get("valid_nll"))]
    if not usable:
      why = "no workdir recorded" if not best.workdir else (
          "missing" if rows is None else "no epoch with a validation NLL")
      notes.append(f"- {s.variant}: best trial #{best.number} has no curve ({rec.METRICS_FILE} "
                   f"{why}: `{path}`).")
      continue
    curves[s.variant] = usable
  if curves:
    figures.learning_curves(curves, baseline, os.path.join(out_dir, "learning_curves.png"))
    lines += ["![Learning curves](learning_curves.png)", ""]
  return lines + notes + [""]


def _summary_json(summaries, comparisons, importances, baseline, checks) -> dict:
  return {
      "baseline_nll": baseline,
      "paper": [dataclasses.asdict(c) for c in checks],
      "variants": {s.variant: {
          "counts": s.counts,
          "best_trial": s.best.number if s.best else None,
          "best_test_nll": s.best.test_nll if s.best else None,
          "median_test_nll": float(np.median(s.sample("all"))) if s.ranked else None,
          "top_test_nll": s.sample("top").tolist()} for s in summaries},
      "comparisons": {p: {v: dataclasses.asdict(c) for v, c in comparisons[p].items()}
                      for p in stats.POPULATIONS},
      "importance": {r.variant: r.fractions or r.reason for r in importances},
  }


def write_report(sweep_dir: str, storage: str | None = None) -> str:
  """Writes `<sweep_dir>/report/` (report.md, PNG figures, summary.json); returns report.md's path.

  Raises rec.SweepError if the sweep's storage is missing or holds no `odyssey/<variant>` study.
  A sweep of experiments/rnn_vs_transformer.py gets its own report (analysis/comparison.py).
  """
  from rnn_research.analysis import comparison  # pylint: disable=g-import-not-at-top
  if comparison.is_comparison_sweep(sweep_dir):
    return comparison.write_report(sweep_dir, storage)
  url = rec.storage_url(sweep_dir, storage)
  records = rec.load_trials(sweep_dir, url)
  out_dir = os.path.join(sweep_dir, REPORT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  summaries = stats.summarize(records)
  comparisons = stats.compare_summaries(summaries)
  baseline, notes = _baseline(records)
  importances = [imp.fanova(s.variant, s.ranked) for s in summaries]
  checks = paper.checks(summaries, comparisons, importances)
  lines = (_overview(sweep_dir, url, records, summaries, baseline, notes)
           + _paper_section(checks)
           + _test_nll_section(out_dir, summaries, comparisons, baseline)
           + _importance_section(out_dir, importances)
           + _marginals_section(out_dir, summaries)
           + _curves_section(out_dir, sweep_dir, summaries, baseline))
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(_summary_json(summaries, comparisons, importances, baseline, checks), f, indent=1)
  _trials_csv(records, os.path.join(out_dir, "trials.csv"))
  return path


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top

  try:
    print(write_report(flags.FLAGS.sweep_dir, given_url(flags.FLAGS.storage)))
  except rec.SweepError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import

  flags.DEFINE_string("sweep_dir", None, "Sweep directory (holds study.db and trial workdirs).",
                      required=True)
  flags.DEFINE_string("storage", None, "Optuna storage URL; default $RNN_RESEARCH_STORAGE, "
                      "else sqlite:///SWEEP_DIR/study.db.")
  app.run(main)
