"""The report end to end: verdicts, Bonferroni p-values, counts, figures, partial sweeps, errors."""
import csv
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import optuna
import pytest
from scipy import stats as scipy_stats

from rnn_research.analysis import figures
from rnn_research.analysis import records as rec
from rnn_research.analysis import write_report
from test_analysis_sweeps import BASELINE_NLL, Sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRIALS = 21  # the top 10% is then 3 trials, enough for a t-test


def table(markdown: str, heading: str) -> dict:
  """The Markdown table after `heading`: first cell -> {column name: cell}."""
  lines = markdown[markdown.index(heading):].splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  rows = []
  for line in lines[start:]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip("|").split("|")])
  header, body = rows[0], rows[2:]
  return {row[0]: dict(zip(header, row)) for row in body}


def number(cell: str) -> float:
  return float(re.sub(r"[^0-9eE.+-]", "", cell))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
  """V, NFG (clearly worse) and CIFG (same distribution as V) with 21 trials each, NIG with 2
  trials and no metrics, plus diverged and running trials."""
  sweep = Sweep(tmp_path_factory.mktemp("full"), seed=1)
  rng = np.random.default_rng(7)
  values = {}
  for variant, mean in (("V", 9.0), ("NFG", 10.2), ("CIFG", 9.0)):
    test = rng.normal(mean, 0.3, TRIALS)
    valid = test + rng.normal(0, 0.1, TRIALS)
    for t, v in zip(test, valid):
      sweep.completed(variant, float(t), valid_nll=float(v))
    values[variant] = (test, valid)
  sweep.completed("NIG", 9.1, metrics=False)
  sweep.completed("NIG", 9.3, metrics=False)
  sweep.diverged("NFG")
  sweep.diverged("NFG")
  sweep.diverged("CIFG")
  sweep.running("V")
  path = write_report(sweep.dir)
  with open(path) as f:
    markdown = f.read()
  with open(os.path.join(os.path.dirname(path), "summary.json")) as f:
    summary = json.load(f)
  return sweep, values, path, markdown, summary


def test_report_is_written_where_promised(full):
  sweep, _, path, _, _ = full
  assert path == os.path.join(sweep.dir, "report", "report.md")


def test_nfg_is_significantly_worse_and_cifg_is_not(full):
  rows = table(full[3], "Table 2")
  for population in ("all", "top 10%"):
    assert "significantly worse" in rows["NFG"][f"vs V ({population})"]
    assert rows["CIFG"][f"vs V ({population})"] == "no difference"
  assert rows["NIG"]["vs V (all)"].startswith("not tested")


def test_bonferroni_p_is_welch_p_times_the_comparisons(full):
  _, values, _, markdown, summary = full
  rows = table(markdown, "Table 2")
  v_test, v_valid = values["V"]
  for variant in ("NFG", "CIFG"):  # NIG has 2 trials: not tested, so 2 comparisons
    test, valid = values[variant]
    p_all = scipy_stats.ttest_ind(test, v_test, equal_var=False).pvalue
    top = lambda t, v: t[np.argsort(v)[:math.ceil(0.1 * TRIALS)]]
    p_top = scipy_stats.ttest_ind(top(test, valid), top(v_test, v_valid), equal_var=False).pvalue
    for population, p in (("all", p_all), ("top", p_top)):
      result = summary["comparisons"][population][variant]
      assert result["p"] == pytest.approx(p, rel=1e-9)
      assert result["p_bonferroni"] == pytest.approx(min(1.0, 2 * p), rel=1e-9)
    assert number(rows[variant]["Bonferroni p (all)"]) == pytest.approx(min(1, 2 * p_all),
                                                                        rel=5e-3, abs=1e-3)


def test_trial_counts(full):
  rows = table(full[3], "Table 1")
  expected = {"V": (TRIALS, 0, 1), "NFG": (TRIALS, 2, 0), "CIFG": (TRIALS, 1, 0),
              "NIG": (2, 0, 0)}
  for variant, (completed, diverged, running) in expected.items():
    row = rows[variant]
    assert (int(row["completed"]), int(row["diverged"]), int(row["running"])) == (
        completed, diverged, running), variant
  assert "Partial sweep" in full[3]


def test_best_trial_and_median_come_from_the_trials(full):
  _, values, _, markdown, _ = full
  rows = table(markdown, "Table 1")
  test, valid = values["NFG"]
  assert number(rows["NFG"]["test NLL of best trial"]) == pytest.approx(
      test[np.argmin(valid)], abs=1e-3)
  assert number(rows["NFG"]["median test NLL"]) == pytest.approx(np.median(test), abs=1e-3)


def test_every_figure_exists_and_is_a_png(full):
  _, _, path, markdown, _ = full
  linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
  assert {"test_nll_boxes.png", "importance.png", "learning_curves.png",
          "marginals_V.png", "marginals_NFG.png"} <= set(linked)
  for name in linked:
    with open(os.path.join(os.path.dirname(path), name), "rb") as f:
      content = f.read()
    assert content.startswith(PNG_MAGIC) and len(content) > 5000, name


def test_importance_and_skips_are_stated(full):
  markdown = full[3]
  rows = table(markdown, "| variant | trials | learning rate")
  assert rows["V"]["learning rate"].endswith("%")
  assert "not enough trials (2 completed, needs 10)" in rows["NIG"]["learning rate"]
  assert "NIG: skipped, 2 completed trials" in markdown
  assert re.search(r"NIG: best trial #\d+ has no curve \(metrics.jsonl missing", markdown)
  assert f"{BASELINE_NLL:.3f}" in markdown


def test_partial_sweep_of_two_trials(tmp_path):
  sweep = Sweep(tmp_path)
  sweep.completed("V", 9.0)
  sweep.completed("V", 9.4)
  markdown = open(write_report(sweep.dir)).read()
  assert "not enough trials (2 completed, needs 10)" in markdown
  assert "V: skipped, 2 completed trials (needs 5)" in markdown
  assert "Variants with no study yet: NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, FGR" in markdown
  assert table(markdown, "Table 1")["V"]["completed"] == "2"
  assert os.path.getsize(tmp_path / "report" / "test_nll_boxes.png") > 0


def test_sweep_with_only_diverged_trials(tmp_path):
  sweep = Sweep(tmp_path)
  for _ in range(3):
    sweep.diverged("V")
  markdown = open(write_report(sweep.dir)).read()
  assert "3 diverged" in markdown
  assert "No completed trial with a test NLL yet" in markdown
  assert "V: no completed trial." in markdown
  assert not (tmp_path / "report" / "test_nll_boxes.png").exists()


def test_storage_without_odyssey_study_is_an_error(tmp_path):
  optuna.create_study(study_name="mnist", storage=Sweep(tmp_path).url)
  with pytest.raises(rec.SweepError, match="no Optuna study named 'odyssey/<variant>'"):
    write_report(str(tmp_path))


def test_command_line_names_the_missing_database(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "rnn_research.analysis.report", f"--sweep_dir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert f"no sweep database at {tmp_path / 'study.db'}" in result.stderr
  assert not (tmp_path / "report").exists()


def highlighted_pixels(png_path) -> int:
  """Pixels of the light-blue fill that marks a box differing significantly from V."""
  from matplotlib import colors, image  # pylint: disable=g-import-not-at-top

  rgb = image.imread(png_path)[..., :3]
  fill = np.array(colors.to_rgb(figures.HIGHLIGHT_FILL))
  return int(np.sum(np.all(np.abs(rgb - fill) < 0.02, axis=-1)))


def test_box_plot_highlights_only_significant_variants(full, tmp_path):
  assert highlighted_pixels(os.path.join(full[0].dir, "report", "test_nll_boxes.png")) > 500
  sweep = Sweep(tmp_path)
  for value in (9.0, 9.2, 9.4):
    sweep.completed("V", value)
    sweep.completed("CIFG", value + 0.01)
  write_report(sweep.dir)
  assert highlighted_pixels(tmp_path / "report" / "test_nll_boxes.png") == 0


def test_paper_claims_are_checked_one_by_one(full):
  """NFG is worse and CIFG is not (the sweep has no NOAF or NP): claims 2 and 3 hold in part;
  nothing beats V; the synthetic NLLs (about 9) lie outside the published 8.4-8.8."""
  _, values, _, markdown, summary = full
  rows = table(markdown, "## Compared with the paper")
  verdicts = {claim.split(" ")[0]: row["verdict"] for claim, row in rows.items()}
  assert verdicts["No"] == "agrees"
  assert verdicts["NFG"] == verdicts["CIFG"] == "partly"
  top = next(row for claim, row in rows.items() if claim.startswith("The best 10%"))
  top_means = [test[np.argsort(valid)[:3]].mean() for test, valid in values.values()]
  inside = sum(8.4 <= m <= 8.8 for m in top_means)
  assert top["verdict"] == ("agrees" if inside == 3 else "partly" if inside else "disagrees")
  assert f"lies in the range for {inside} of 4 variants" in top["this run shows"]
  nfg = next(row for claim, row in rows.items() if claim.startswith("NFG"))
  assert "NFG: significantly worse (all trials" in nfg["this run shows"]
  assert "NOAF: no trials" in nfg["this run shows"]
  assert [c["verdict"] for c in summary["paper"]] == [row["verdict"] for row in rows.values()]


def test_every_trial_is_in_the_trials_table(full):
  sweep, values, path, _, _ = full
  with open(os.path.join(os.path.dirname(path), "trials.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 3 * TRIALS + 2 + 3 + 1  # completed, NIG's two, diverged, running
  nfg = [r for r in rows if r["variant"] == "NFG" and r["status"] == "completed"]
  np.testing.assert_allclose(sorted(float(r["test_nll"]) for r in nfg), sorted(values["NFG"][0]))
  assert {r["status"] for r in rows} == {"completed", "diverged", "running"}
  assert all(float(r["learning_rate"]) > 0 and int(r["hidden_size"]) >= 20 for r in rows)
  assert all(r["test_nll"] == "" for r in rows if r["status"] != "completed")
