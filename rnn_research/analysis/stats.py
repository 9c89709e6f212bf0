"""Per-variant summaries of the declared test metric and Welch's t-tests against the declared
baseline variant.

As in the Odyssey paper's Fig. 3, each variant is looked at twice: over all completed trials,
and over its best 10% chosen on the validation metric. Each variant's mean test metric is
compared with the baseline's by Welch's t-test (unequal variances); with m variants compared,
the Bonferroni-corrected p-value is min(1, m * p), and a difference counts as significant when
that is below ALPHA. Better and worse follow the declared direction.
"""
import dataclasses
import math

import numpy as np

from rnn_research.analysis import records as rec

TOP_FRACTION = 0.1
ALPHA = 0.05
MIN_TEST_SAMPLES = 3  # per group; fewer trials are reported as not tested
POPULATIONS = ("all", "top")  # all completed trials; the best TOP_FRACTION on validation

WORSE, BETTER, NO_DIFFERENCE = "significantly worse", "significantly better", "no difference"


@dataclasses.dataclass(frozen=True)
class VariantSummary:
  """One variant's trials: counts per status, and its completed trials ranked on validation.

  ranked: the completed trials with both a validation and a test metric, best validation first.
  """
  variant: str
  counts: dict
  ranked: list

  @property
  def top(self) -> list:
    """The best TOP_FRACTION of the ranked trials (at least one, if there are any)."""
    return self.ranked[:math.ceil(TOP_FRACTION * len(self.ranked))]

  @property
  def best(self) -> rec.TrialRecord | None:
    """The trial with the best validation metric (the one a practitioner would pick)."""
    return self.ranked[0] if self.ranked else None

  def sample(self, population: str) -> np.ndarray:
    """Test metric of the trials of `population` ("all" or "top")."""
    trials = self.ranked if population == "all" else self.top
    return np.array([t.test_metric for t in trials], float)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A variant's mean test metric against the baseline's. p-values are None when the test
  was not run."""
  variant: str
  n: int
  n_baseline: int
  mean_difference: float | None  # variant mean minus the baseline's
  p: float | None = None
  p_bonferroni: float | None = None
  verdict: str = "not tested"


def summarize(records: list[rec.TrialRecord],
              direction: str = "minimize") -> list[VariantSummary]:
  """One summary per variant present in `records`, in the order they first appear; trials
  ranked best first in the metric's `direction`."""
  variants = list(dict.fromkeys(r.variant for r in records))
  summaries = []
  for variant in variants:
    trials = [r for r in records if r.variant == variant]
    counts = {s: sum(r.status == s for r in trials) for s in rec.STATUSES}
    usable = [r for r in trials if r.status == rec.COMPLETED
              and r.valid_metric is not None and r.test_metric is not None]
    sign = 1 if direction == "minimize" else -1
    ranked = sorted(usable, key=lambda r: (sign * r.valid_metric, r.number))
    summaries.append(VariantSummary(variant, counts, ranked))
  return summaries


def _trials(n: int) -> str:
  return f"{n} trial" if n == 1 else f"{n} trials"


def _verdict(mean_difference: float, p_bonferroni: float, direction: str) -> str:
  if p_bonferroni >= ALPHA:
    return NO_DIFFERENCE
  return WORSE if (mean_difference > 0) == (direction == "minimize") else BETTER


def compare_with_baseline(samples: dict[str, np.ndarray], baseline: str,
                          direction: str = "minimize") -> dict[str, Comparison]:
  """Welch's t-test of each variant's sample against `baseline`'s, Bonferroni-corrected.

  samples: variant -> test metric values. The number of comparisons m is the number of
  variants actually tested (those with at least MIN_TEST_SAMPLES values and not all equal to
  the baseline's); the others get a Comparison whose verdict says why they were not tested.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  base = np.asarray(samples.get(baseline, ()), float)
  raw, results = {}, {}
  for variant, values in samples.items():
    if variant == baseline:
      continue
    values = np.asarray(values, float)
    diff = float(values.mean() - base.mean()) if len(values) and len(base) else None
    if len(base) < MIN_TEST_SAMPLES:
      reason = f"not tested: {baseline} has {_trials(len(base))} (needs {MIN_TEST_SAMPLES})"
    elif len(values) < MIN_TEST_SAMPLES:
      reason = f"not tested: {_trials(len(values))} (needs {MIN_TEST_SAMPLES})"
    else:
      p = float(stats.ttest_ind(values, base, equal_var=False).pvalue)
      reason = None if math.isfinite(p) else "not tested: no variance in either group"
      raw[variant] = p
    results[variant] = Comparison(variant, len(values), len(base), diff, verdict=reason)
  tested = {v: p for v, p in raw.items() if math.isfinite(p)}
  for variant, p in tested.items():
    corrected = min(1.0, p * len(tested))
    results[variant] = dataclasses.replace(
        results[variant], p=p, p_bonferroni=corrected,
        verdict=_verdict(results[variant].mean_difference, corrected, direction))
  return results


def compare_summaries(summaries: list[VariantSummary], baseline: str,
                      direction: str = "minimize") -> dict[str, dict[str, Comparison]]:
  """population ("all", "top") -> variant -> Comparison with `baseline`."""
  return {pop: compare_with_baseline({s.variant: s.sample(pop) for s in summaries}, baseline,
                                     direction)
          for pop in POPULATIONS}
