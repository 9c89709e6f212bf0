"""The report's Markdown tables: trials and test NLL, t-tests against V, fANOVA importance."""
import numpy as np

from rnn_research.analysis import importance as imp
from rnn_research.analysis import records as rec
from rnn_research.analysis import stats

DASH = "–"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  """A GitHub-flavoured Markdown table; the first column left-aligned, the others right."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def fmt(value, spec: str = ".3f") -> str:
  """`value` formatted with `spec`, or a dash for None/NaN."""
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return DASH
  return format(value, spec)


def fmt_p(p: float | None) -> str:
  """A p-value: three significant digits, scientific below 1e-3."""
  if p is None:
    return DASH
  return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _param_counts(summary: stats.VariantSummary) -> tuple[str, str]:
  counts = [t.num_params for t in summary.ranked if t.num_params is not None]
  best = summary.best.num_params if summary.best else None
  return fmt(best, ","), fmt(int(np.median(counts)) if counts else None, ",")


def trials_table(summaries: list[stats.VariantSummary]) -> str:
  """Table 1: per variant, trial counts, test NLL (best trial, median, top 10%), sizes."""
  header = ["variant", "completed", "diverged", "failed", "running",
            "test NLL of best trial", "median test NLL",
            f"top {stats.TOP_FRACTION:.0%} mean ± std", "params (best trial)", "params (median)"]
  rows = []
  for s in summaries:
    top = s.sample("top")
    top_text = (f"{top.mean():.3f} ± {top.std(ddof=1):.3f} (n={len(top)})" if len(top) > 1
                else fmt(top[0] if len(top) else None))
    all_nll = s.sample("all")
    rows.append([s.variant, *(str(s.counts[k]) for k in rec.STATUSES),
                 fmt(s.best.test_nll if s.best else None),
                 fmt(float(np.median(all_nll)) if len(all_nll) else None), top_text,
                 *_param_counts(s)])
  return markdown_table(header, rows)


def comparisons_table(summaries: list[stats.VariantSummary], comparisons: dict) -> str:
  """Table 2: Welch's t-test of each variant against V, over all trials and over the top 10%."""
  header = ["variant"]
  for label in ("all", f"top {stats.TOP_FRACTION:.0%}"):
    header += [f"n ({label})", f"Δ mean ({label})", f"Welch p ({label})",
               f"Bonferroni p ({label})", f"vs V ({label})"]
  rows = []
  for s in summaries:
    if s.variant == rec.BASELINE_VARIANT:
      continue
    row = [s.variant]
    for population in stats.POPULATIONS:
      c = comparisons[population][s.variant]
      row += [str(c.n), fmt(c.mean_difference, "+.3f"), fmt_p(c.p), fmt_p(c.p_bonferroni),
              f"**{c.verdict}**" if c.verdict in (stats.WORSE, stats.BETTER) else c.verdict]
    rows.append(row)
  return markdown_table(header, rows)


def importance_table(importances: list[imp.Importance]) -> str:
  """Table 3: fANOVA variance fractions per variant, or why there are none."""
  names = [*rec.SEARCH_SPACE, imp.INTERACTIONS]
  header = ["variant", "trials"] + [n.replace("_", " ") for n in names]
  rows = []
  for result in importances:
    if result.fractions:
      cells = [f"{result.fractions[n]:.1%}" for n in names]
    else:
      cells = [result.reason] + [DASH] * (len(names) - 1)
    rows.append([result.variant, str(result.num_trials), *cells])
  return markdown_table(header, rows)
