"""The report's Markdown tables (trials and the test metric, t-tests against the baseline
variant, fANOVA importance) and the labels it names params and metrics by."""
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


def param_label(name: str, param) -> str:
  """How the report names a declared param: its label, or its name with spaces."""
  return param.label or name.replace("_", " ")


def metric_label(study, split: str = "test", unit: bool = True) -> str:
  """E.g. "test NLL (nats per frame)": the declared metric of `split`, with its unit."""
  name = "NLL" if study.metric == "nll" else study.metric.replace("_", " ")
  return f"{split} {name}".strip() + (f" ({study.unit})" if unit and study.unit else "")


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


def trials_table(summaries: list[stats.VariantSummary], study) -> str:
  """Table 1: per variant, trial counts, the test metric (best trial, median, top 10%),
  sizes."""
  metric = metric_label(study, unit=False)
  header = ["variant", "completed", "diverged", "failed", "running",
            f"{metric} of best trial", f"median {metric}",
            f"top {stats.TOP_FRACTION:.0%} mean ± std", "params (best trial)", "params (median)"]
  rows = []
  for s in summaries:
    top = s.sample("top")
    top_text = (f"{top.mean():.3f} ± {top.std(ddof=1):.3f} (n={len(top)})" if len(top) > 1
                else fmt(top[0] if len(top) else None))
    values = s.sample("all")
    rows.append([s.variant, *(str(s.counts[k]) for k in rec.STATUSES),
                 fmt(s.best.test_metric if s.best else None),
                 fmt(float(np.median(values)) if len(values) else None), top_text,
                 *_param_counts(s)])
  return markdown_table(header, rows)


def comparisons_table(summaries: list[stats.VariantSummary], comparisons: dict,
                      baseline: str) -> str:
  """Table 2: Welch's t-test of each variant against `baseline`, over all trials and over the
  top 10%."""
  header = ["variant"]
  for label in ("all", f"top {stats.TOP_FRACTION:.0%}"):
    header += [f"n ({label})", f"Δ mean ({label})", f"Welch p ({label})",
               f"Bonferroni p ({label})", f"vs {baseline} ({label})"]
  rows = []
  for s in summaries:
    if s.variant == baseline:
      continue
    row = [s.variant]
    for population in stats.POPULATIONS:
      c = comparisons[population][s.variant]
      row += [str(c.n), fmt(c.mean_difference, "+.3f"), fmt_p(c.p), fmt_p(c.p_bonferroni),
              f"**{c.verdict}**" if c.verdict in (stats.WORSE, stats.BETTER) else c.verdict]
    rows.append(row)
  return markdown_table(header, rows)


def importance_table(importances: list[imp.Importance], space: dict) -> str:
  """Table 3: fANOVA variance fractions per variant, or why there are none."""
  names = [*space, imp.INTERACTIONS]
  header = ["variant", "trials"] + [param_label(n, space[n]) if n in space else n
                                    for n in names]
  rows = []
  for result in importances:
    if result.fractions:
      cells = [f"{result.fractions[n]:.1%}" for n in names]
    else:
      cells = [result.reason] + [DASH] * (len(names) - 1)
    rows.append([result.variant, str(result.num_trials), *cells])
  return markdown_table(header, rows)
