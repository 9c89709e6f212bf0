"""The report's figures as PNG files, drawn with matplotlib's Agg backend (no display needed).

As the Odyssey paper's: box_plots its Fig. 3; importance_bars Fig. 5; marginals Fig. 4;
learning_curves: the validation metric per epoch of each variant's best trial. `study` is the
declaration (rnn_research.declaration.Study) whose metric, baseline and space they show.
"""
import numpy as np

from rnn_research.analysis import importance as imp
from rnn_research.analysis import stats
from rnn_research.analysis.tables import metric_label, param_label

DPI = 120
HIGHLIGHT = "tab:blue"  # boxes of variants that differ significantly from the baseline
HIGHLIGHT_FILL = "#d6e6f5"
BASELINE_LABEL = "task baseline"  # the trials' baseline_nll: their task's reference model
TRIALS_PER_BIN = 5  # the binned marginal has about this many trials per bin, 3 to 10 bins


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=DPI, bbox_inches="tight")
  _pyplot().close(fig)
  return path


def _baseline_line(ax, baseline_nll: float | None) -> None:
  if baseline_nll is not None:
    ax.axhline(baseline_nll, color="0.35", linestyle="--", linewidth=1.2,
               label=f"{BASELINE_LABEL} ({baseline_nll:.2f})")


def _box_row(ax, summaries, comparisons, population: str, baseline_nll) -> None:
  """One row of Fig. 3: a box per variant, significant differences from the baseline variant
  in thick blue."""
  for i, summary in enumerate(summaries):
    values = summary.sample(population)
    if not len(values):
      ax.text(i, 0.5, "no\ntrials", transform=ax.get_xaxis_transform(), ha="center",
              va="center", color="0.5", fontsize=8)
      continue
    verdict = comparisons.get(summary.variant, stats.Comparison(summary.variant, 0, 0, None))
    significant = verdict.verdict in (stats.WORSE, stats.BETTER)
    colour, width, fill = (HIGHLIGHT, 2.5, HIGHLIGHT_FILL) if significant else (
        "black", 1.0, "white")
    line = dict(color=colour, linewidth=width)
    ax.boxplot(values, positions=[i], widths=0.55, whis=(0, 100), showfliers=False,
               patch_artist=True, boxprops=dict(facecolor=fill, edgecolor=colour,
                                                linewidth=width),
               whiskerprops=line, capprops=line, medianprops=dict(color="red", linewidth=1.5))
    ax.plot(i, values.mean(), "o", color="red", markersize=4, zorder=3)
    if significant:
      label = "worse" if verdict.verdict == stats.WORSE else "better"
      ax.annotate(label, (i, values.max()), xytext=(0, 4), textcoords="offset points",
                  ha="center", va="bottom", color=HIGHLIGHT, fontsize=8, fontweight="bold")
  _baseline_line(ax, baseline_nll)
  ax.set_xticks(range(len(summaries)))
  ax.set_xticklabels([f"{s.variant}\nn={len(s.sample(population))}" for s in summaries])
  ax.set_xlim(-0.6, len(summaries) - 0.4)
  ax.margins(y=0.08)
  ax.grid(axis="y", alpha=0.3)


def box_plots(study, summaries, comparisons, baseline_nll, path: str) -> str:
  """Fig. 3: the test metric per variant, all completed trials (top) and the best 10%
  (bottom)."""
  plt = _pyplot()
  fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.85 * len(summaries) + 2), 8))
  titles = {"all": "all completed trials",
            "top": f"best {stats.TOP_FRACTION:.0%} of trials (chosen on "
                   f"{metric_label(study, 'validation', unit=False)})"}
  for ax, population in zip(axes, stats.POPULATIONS):
    _box_row(ax, summaries, comparisons[population], population, baseline_nll)
    title = metric_label(study, unit=False)
    ax.set_title(f"{title[0].upper()}{title[1:]}, {titles[population]}", fontsize=11)
    ax.set_ylabel(metric_label(study))
  handles = [plt.Line2D([], [], color="red", label="median"),
             plt.Line2D([], [], color="red", marker="o", linestyle="", label="mean"),
             plt.Line2D([], [], color=HIGHLIGHT, linewidth=2.5,
                        label=f"differs from {study.baseline} (Welch, Bonferroni p < "
                              f"{stats.ALPHA})")]
  if baseline_nll is not None:
    handles.append(plt.Line2D([], [], color="0.35", linestyle="--",
                              label=f"{BASELINE_LABEL} ({baseline_nll:.2f})"))
  fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False,
             bbox_to_anchor=(0.5, -0.06))
  fig.tight_layout()
  return _save(fig, path)


def importance_bars(study, importances: list, path: str) -> str:
  """Fig. 5 as stacked bars: each variant's variance fractions from fANOVA."""
  plt = _pyplot()
  names = [*study.space, imp.INTERACTIONS]
  colours = {n: f"C{i % 10}" for i, n in enumerate(study.space)} | {imp.INTERACTIONS: "0.75"}
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(importances) + 1.6))
  for row, result in enumerate(importances):
    if not result.fractions:
      ax.text(0.01, row, result.reason, va="center", fontsize=8, color="0.4")
      continue
    left = 0.0
    for name in names:
      share = result.fractions[name]
      ax.barh(row, share, left=left, color=colours[name], edgecolor="white", height=0.7)
      if share >= 0.07:
        ax.text(left + share / 2, row, f"{share:.0%}", ha="center", va="center", fontsize=7)
      left += share
  ax.set_yticks(range(len(importances)))
  ax.set_yticklabels([f"{r.variant} (n={r.num_trials})" for r in importances])
  ax.invert_yaxis()
  ax.set_xlim(0, 1)
  ax.set_xlabel(f"fraction of the variance of {metric_label(study, unit=False)} (fANOVA)")
  handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
  labels = [param_label(n, study.space[n]) if n in study.space else n for n in names]
  ax.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False,
            bbox_to_anchor=(0.5, 1.0))
  return _save(fig, path)


def marginal_bins(num_trials: int) -> int:
  """How many bins the binned marginal of `num_trials` trials uses."""
  return int(np.clip(num_trials // TRIALS_PER_BIN, 3, 10))


def marginals(study, variant: str, trials: list, path: str) -> str:
  """Fig. 4: the test metric against each declared param, with binned medians (on the param's
  sampling axis; a bin per choice of a categorical param)."""
  plt = _pyplot()
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(study.space), figsize=(4 * len(study.space), 3.6),
                           sharey=True, squeeze=False)
  y = np.array([t.test_metric for t in trials], float)
  for ax, (name, param) in zip(axes[0], study.space.items()):
    categorical = param.scale == "categorical"
    x = np.array([param.axis(t.params[name]) if categorical else t.params[name]
                  for t in trials], float)
    ax.scatter(x, y, s=12, alpha=0.45, color="tab:blue", edgecolors="none", label="trial")
    num_bins = len(param.choices) if categorical else marginal_bins(len(trials))
    centres, medians, _ = imp.binned_marginal(x, y, num_bins, param.log)
    ax.plot(centres, medians, "-o", color="tab:red", markersize=3.5, label="binned median")
    if categorical:
      ax.set_xticks(range(len(param.choices)))
      ax.set_xticklabels([str(c) for c in param.choices])
    else:
      if param.log:
        ax.set_xscale("log")
        if param.high / param.low <= 10:  # one decade: plain numbers read better than 2x10^1
          ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
          ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
          ax.xaxis.set_minor_formatter(ticker.NullFormatter())
      if param.low <= x.min() and x.max() <= param.high:  # show the whole search range
        ax.set_xlim(param.low, param.high)
    ax.set_xlabel(param_label(name, param))
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(metric_label(study))
  axes[0][0].legend(fontsize=8)
  fig.suptitle(f"{variant}: marginal effect of each hyperparameter on "
               f"{metric_label(study, unit=False)} ({len(trials)} completed trials)",
               fontsize=11)
  fig.tight_layout()
  return _save(fig, path)


def learning_curves(study, curves: dict, baseline_nll, path: str) -> str:
  """The validation metric per epoch of each variant's best trial.

  curves: variant -> metrics.jsonl rows, each with an "epoch" and a finite study.objective.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 5))
  styles = ["-", "--", "-.", ":"]
  for i, (variant, rows) in enumerate(curves.items()):
    epochs = [r["epoch"] for r in rows]
    valid = [r[study.objective] for r in rows]
    ax.plot(epochs, valid, styles[i % len(styles)], color=f"C{i % 10}", linewidth=1.6,
            label=variant)
    best = int(np.argmin(valid) if study.direction == "minimize" else np.argmax(valid))
    ax.plot(epochs[best], valid[best], "o", color=f"C{i % 10}", markersize=5)
  _baseline_line(ax, baseline_nll)
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # epochs are whole
  ax.set_xlabel("epoch")
  ax.set_ylabel(metric_label(study, "validation"))
  label = metric_label(study, "validation", unit=False)
  ax.set_title(f"{label[0].upper()}{label[1:]} of each variant's best trial (dot: best epoch)",
               fontsize=11)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, ncol=2)
  return _save(fig, path)
