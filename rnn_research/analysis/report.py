"""Turns a finished or partial sweep of any declared study into `<sweep_dir>/report/report.md`
and PNG figures.

    python -m rnn_research.analysis.report --sweep_dir=DIR [--storage=URL]

Reads the study's declaration from DIR/sweep.json (rnn_research.declaration), its per-variant
Optuna studies `<study>/<variant>` (by default from DIR/study.db) and each trial's
`metrics.jsonl` (see records.py), and writes an overview, then the sections the study declares
(SECTIONS; by default box plots of the test metric per variant with the variants that differ
significantly from the declared baseline in thick blue, Welch's t-tests against the baseline
with Bonferroni's correction, fANOVA importance over the declared space, marginal effects,
learning curves), `summary.json` with the same numbers for scripts and `trials.csv` with every
trial. The Odyssey study adds the paper's conclusions checked one by one (paper.py); the
RNN-vs-Transformer study has its own comparison (comparison.py). About a minute for 9 x 200
trials, most of it fANOVA.
"""
import csv
import dataclasses
import functools
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
BASELINE_SECTIONS = ("tests", "curves")  # the sections that draw the task's baseline NLL


@dataclasses.dataclass
class Sweep:
  """What the sections read: the declaration, the trials, and what is computed from them
  (once, when a section first asks). Sections add their numbers to `summary`."""
  dir: str
  url: str
  study: object  # declaration.Study
  records: list
  out_dir: str
  summary: dict = dataclasses.field(default_factory=dict)

  @functools.cached_property
  def summaries(self) -> list[stats.VariantSummary]:
    return stats.summarize(self.records, self.study.direction)

  @functools.cached_property
  def comparisons(self) -> dict:
    return stats.compare_summaries(self.summaries, self.study.baseline, self.study.direction)

  @functools.cached_property
  def importances(self) -> list[imp.Importance]:
    return [imp.fanova(s.variant, s.ranked, self.study.space) for s in self.summaries]

  @functools.cached_property
  def baseline(self) -> tuple[float | None, list[str]]:
    """The task's baseline NLL the trials recorded (None unless the metric is the NLL), and
    notes if they disagree."""
    if self.study.metric != "nll":
      return None, []
    values = sorted({r.baseline_nll for r in self.records if r.baseline_nll is not None})
    if not values:
      return None, ["No trial recorded `baseline_nll`: the figures leave the baseline out."]
    if values[-1] - values[0] > 1e-6:
      return float(np.median(values)), [
          f"Trials recorded different baselines ({values[0]:.4f} to {values[-1]:.4f}); "
          "the line shows their median. Were they trained on the same data?"]
    return values[0], []


def _overview(sweep: Sweep) -> list[str]:
  study, records = sweep.study, sweep.records
  counts = {s: sum(r.status == s for r in records) for s in rec.STATUSES}
  data = sorted({r.data for r in records if r.data}) or [study.data or "sweep"]
  present = {r.variant for r in records}
  missing = [v for v in rec.selected_variants(sweep.dir) if v not in present]
  lines = [f"# {study.title or study.name} — {', '.join(data)} report", "",
           f"- Sweep: `{sweep.dir}` (storage `{masked(sweep.url)}`)",
           f"- Trials: {len(records)} in {len(present)} variant studies: "
           + ", ".join(f"{n} {s}" for s, n in counts.items())]
  notes = []
  if study.metric == "nll" and set(BASELINE_SECTIONS) & set(study.report):
    baseline, notes = sweep.baseline
    sweep.summary["baseline_nll"] = baseline
    lines.append(f"- {figures.BASELINE_LABEL.capitalize()}, test NLL: {tables.fmt(baseline)}"
                 + (f" {study.unit}" if study.unit else ""))
  if missing:
    lines.append(f"- Variants with no study yet: {', '.join(missing)}")
  if counts[rec.RUNNING]:
    lines.append("- **Partial sweep**: running trials are counted but not analysed.")
  return lines + [f"- {n}" for n in notes] + [""]


def _paper_section(sweep: Sweep) -> list[str]:
  checks = paper.checks(sweep.summaries, sweep.comparisons, sweep.importances)
  sweep.summary["paper"] = [dataclasses.asdict(c) for c in checks]
  return ["## Compared with the paper", "",
          "Each conclusion of Greff et al. (2017) on JSB Chorales against this run. Significance: "
          f"Welch's t-test against V, Bonferroni-corrected, p < {stats.ALPHA}, over all completed "
          f"trials and over the best {stats.TOP_FRACTION:.0%} (the t-tests below); importance: "
          "fANOVA (below). Every trial is in `trials.csv`.", "", paper.table(checks), ""]


def _tests_section(sweep: Sweep) -> list[str]:
  study, summaries, comparisons = sweep.study, sweep.summaries, sweep.comparisons
  metric, base = tables.metric_label(study, unit=False), study.baseline
  sweep.summary["variants"] = {s.variant: {
      "counts": s.counts,
      "best_trial": s.best.number if s.best else None,
      f"best_{study.test_key}": s.best.test_metric if s.best else None,
      f"median_{study.test_key}": float(np.median(s.sample("all"))) if s.ranked else None,
      f"top_{study.test_key}": s.sample("top").tolist()} for s in summaries}
  sweep.summary["comparisons"] = {p: {v: dataclasses.asdict(c) for v, c in comparisons[p].items()}
                                  for p in stats.POPULATIONS}
  lines = [f"## {metric[0].upper()}{metric[1:]} per variant", ""]
  if not any(len(s.ranked) for s in summaries):
    return lines + [f"No completed trial with a {metric} yet: box plots and tests skipped.", ""]
  baseline_nll = sweep.baseline[0]
  figures.box_plots(study, summaries, comparisons, baseline_nll,
                    os.path.join(sweep.out_dir, f"{study.test_key}_boxes.png"))
  m = {p: sum(c.p is not None for c in comparisons[p].values()) for p in stats.POPULATIONS}
  worse = "worse" if study.direction == "minimize" else "better"
  lines += [
      f"![{metric[0].upper()}{metric[1:]} per variant]({study.test_key}_boxes.png)", "",
      "Boxes span the 25th to 75th percentile, whiskers the whole range; red line = median, "
      "red dot = mean" + ("; dashed line = task baseline" if baseline_nll is not None else "")
      + f". Boxes in **thick blue** differ significantly from {base} (Welch's t-test, "
      f"Bonferroni-corrected p < {stats.ALPHA}). The best {stats.TOP_FRACTION:.0%} of a "
      f"variant's trials are chosen on {tables.metric_label(study, 'validation', unit=False)}; "
      f"the *best trial* is the one with the best "
      f"{tables.metric_label(study, 'validation', unit=False)}.",
      "", f"### Table 1: trials and {tables.metric_label(study)}", "",
      tables.trials_table(summaries, study),
      "", f"### Table 2: Welch's t-test of each variant's mean {metric} against {base}", "",
      f"Bonferroni: p times the number of variants tested against {base} ({m['all']} over all "
      f"trials, {m['top']} over the top {stats.TOP_FRACTION:.0%}), capped at 1; Δ mean > 0 means "
      f"{worse} than {base}. A variant needs at least {stats.MIN_TEST_SAMPLES} trials in a "
      "population to be tested.", ""]
  if not any(s.variant == base for s in summaries):
    lines += [f"No study for {base}: nothing to compare against.", ""]
  return lines + [tables.comparisons_table(summaries, comparisons, base), ""]


def _importance_section(sweep: Sweep) -> list[str]:
  study, importances = sweep.study, sweep.importances
  sweep.summary["importance"] = {r.variant: r.fractions or r.reason for r in importances}
  logs = [tables.param_label(n, p) for n, p in study.space.items() if p.log]
  lines = ["## Hyperparameter importance, fANOVA", "",
           f"Fraction of the variance of {tables.metric_label(study, unit=False)} explained by "
           "each hyperparameter alone (main effects) and by their interactions, from a random "
           "forest over each variant's completed trials (Optuna's FanovaImportanceEvaluator, "
           f"seed {imp.SEED}" + (f"; {', '.join(logs)} on log axes" if logs else "")
           + f"). fANOVA needs at least {imp.MIN_FANOVA_TRIALS} completed trials.", "",
           tables.importance_table(importances, study.space), ""]
  if any(r.fractions for r in importances):
    figures.importance_bars(study, importances, os.path.join(sweep.out_dir, "importance.png"))
    lines += ["![fANOVA importance](importance.png)", ""]
  return lines


def _marginals_section(sweep: Sweep) -> list[str]:
  study = sweep.study
  lines = ["## Marginal effects of the hyperparameters", "",
           f"Each completed trial's {tables.metric_label(study, unit=False)} against one "
           "hyperparameter (dots), with the median in equal-width bins on the axis it was "
           f"sampled on, one per {figures.TRIALS_PER_BIN} trials (3 to 10 bins; a bin per "
           "choice of a categorical one).", ""]
  for s in sweep.summaries:
    usable = [t for t in s.ranked if all(n in t.params for n in study.space)]
    if len(usable) < MIN_MARGINAL_TRIALS:
      lines += [f"- {s.variant}: skipped, {len(usable)} completed trials "
                f"(needs {MIN_MARGINAL_TRIALS}).", ""]
      continue
    name = f"marginals_{s.variant}.png"
    figures.marginals(study, s.variant, usable, os.path.join(sweep.out_dir, name))
    lines += [f"![{s.variant} marginals]({name})", ""]
  return lines


def _finite_number(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def _curves_section(sweep: Sweep) -> list[str]:
  study = sweep.study
  lines = [f"## Learning curves ({tables.metric_label(study, 'validation', unit=False)} of each "
           "variant's best trial)", ""]
  curves, notes = {}, []
  for s in sweep.summaries:
    best = s.best
    if best is None:
      notes.append(f"- {s.variant}: no completed trial.")
      continue
    path = os.path.join(sweep.dir, best.workdir or "", rec.METRICS_FILE)
    rows = rec.read_metrics(path) if best.workdir else None
    usable = [r for r in rows or [] if "epoch" in r and _finite_number(r.get(study.objective))]
    if not usable:
      why = "no workdir recorded" if not best.workdir else (
          "missing" if rows is None else f"no epoch with a {study.objective}")
      notes.append(f"- {s.variant}: best trial #{best.number} has no curve ({rec.METRICS_FILE} "
                   f"{why}: `{path}`).")
      continue
    curves[s.variant] = usable
  if curves:
    figures.learning_curves(study, curves, sweep.baseline[0],
                            os.path.join(sweep.out_dir, "learning_curves.png"))
    lines += ["![Learning curves](learning_curves.png)", ""]
  return lines + notes + [""]


def _comparison_section(sweep: Sweep) -> list[str]:
  from rnn_research.analysis import comparison  # pylint: disable=g-import-not-at-top
  return comparison.section(sweep)


# The sections a study may declare (declaration.Study.report), each (sweep) -> report lines.
SECTIONS = {"paper": _paper_section, "tests": _tests_section,
            "importance": _importance_section, "marginals": _marginals_section,
            "curves": _curves_section, "comparison": _comparison_section}


def check_sections(names) -> None:
  """Refuses a report section the report does not know (before a sweep starts)."""
  unknown = [n for n in names if n not in SECTIONS]
  if unknown:
    raise ValueError(f"report sections {unknown} are unknown; they are {list(SECTIONS)}")


def _trials_csv(sweep: Sweep, path: str) -> None:
  """Every trial, one row each (empty where a trial has no value)."""
  study = sweep.study
  columns = ("variant", "number", "status", *study.space, "epochs", "best_epoch",
             study.objective, study.test_key, "num_params", "diverged_step")
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for r in sweep.records:
      values = {**dataclasses.asdict(r), **r.params, study.objective: r.valid_metric,
                study.test_key: r.test_metric}
      writer.writerow(["" if values.get(c) is None else values[c] for c in columns])


def write_report(sweep_dir: str, storage: str | None = None) -> str:
  """Writes `<sweep_dir>/report/` (report.md, PNG figures, summary.json, trials.csv); returns
  report.md's path.

  Raises rec.SweepError if the sweep's storage is missing, its sweep.json has no declaration
  (and is of no built-in study), or the storage holds no study of a declared variant.
  """
  url = rec.storage_url(sweep_dir, storage)
  study = rec.load_study(sweep_dir)
  check_sections(study.report)
  records = rec.load_trials(sweep_dir, study, url)
  out_dir = os.path.join(sweep_dir, REPORT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  sweep = Sweep(sweep_dir, url, study, records, out_dir)
  lines = _overview(sweep)
  for name in study.report:
    lines += SECTIONS[name](sweep)
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(sweep.summary, f, indent=1)
  _trials_csv(sweep, os.path.join(out_dir, "trials.csv"))
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

  flags.DEFINE_string("sweep_dir", None, "Sweep directory (holds sweep.json, study.db and "
                      "trial workdirs).", required=True)
  flags.DEFINE_string("storage", None, "Optuna storage URL; default $RNN_RESEARCH_STORAGE, "
                      "else sqlite:///SWEEP_DIR/study.db.")
  app.run(main)
