"""Per-variant summaries of test NLL and Welch's t-tests against the vanilla LSTM.

As in the paper's Fig. 3, each variant is looked at twice: over all completed trials, and over
its best 10% chosen on validation NLL. Each variant's mean test NLL is compared with V's by
Welch's t-test (unequal variances); with m variants compared, the Bonferroni-corrected p-value
is min(1, m * p), and a difference counts as significant when that is below ALPHA.
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

  ranked: the completed trials with both a validation and a test NLL, best validation first.
  """
  variant: str
  counts: dict
  ranked: list

  @property
  def test_nll(self) -> np.ndarray:
    """Test NLL of every ranked trial: [trials]."""
    return np.array([t.test_nll for t in self.ranked], float)

  @property
  def top(self) -> list:
    """The best TOP_FRACTION of the ranked trials (at least one, if there are any)."""
    return self.ranked[:math.ceil(TOP_FRACTION * len(self.ranked))]

  @property
  def best(self) -> rec.TrialRecord | None:
    """The trial with the best validation NLL (the one a practitioner would pick)."""
    return self.ranked[0] if self.ranked else None

  def sample(self, population: str) -> np.ndarray:
    """Test NLL of the trials of `population` ("all" or "top")."""
    trials = self.ranked if population == "all" else self.top
    return np.array([t.test_nll for t in trials], float)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A variant's mean test NLL against V's. p-values are None when the test was not run."""
  variant: str
  n: int
  n_baseline: int
  mean_difference: float | None  # variant mean minus V mean (positive: variant is worse)
  p: float | None = None
  p_bonferroni: float | None = None
  verdict: str = "not tested"


def summarize(records: list[rec.TrialRecord]) -> list[VariantSummary]:
  """One summary per variant present in `records`, in the order they first appear."""
  variants = list(dict.fromkeys(r.variant for r in records))
  summaries = []
  for variant in variants:
    trials = [r for r in records if r.variant == variant]
    counts = {s: sum(r.status == s for r in trials) for s in rec.STATUSES}
    usable = [r for r in trials if r.status == rec.COMPLETED
              and r.valid_nll is not None and r.test_nll is not None]
    ranked = sorted(usable, key=lambda r: (r.valid_nll, r.number))
    summaries.append(VariantSummary(variant, counts, ranked))
  return summaries


def _trials(n: int) -> str:
  return f"{n} trial" if n == 1 else f"{n} trials"


def _verdict(mean_difference: float, p_bonferroni: float) -> str:
  if p_bonferroni >= ALPHA:
    return NO_DIFFERENCE
  return WORSE if mean_difference > 0 else BETTER


def compare_with_baseline(samples: dict[str, np.ndarray],
                          baseline: str = rec.BASELINE_VARIANT) -> dict[str, Comparison]:
  """Welch's t-test of each variant's sample against `baseline`'s, Bonferroni-corrected.

  samples: variant -> test NLL values. The number of comparisons m is the number of variants
  actually tested (those with at least MIN_TEST_SAMPLES values and not all equal to V's);
  the others get a Comparison whose verdict says why they were not tested.
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
        verdict=_verdict(results[variant].mean_difference, corrected))
  return results


def compare_summaries(summaries: list[VariantSummary]) -> dict[str, dict[str, Comparison]]:
  """population ("all", "top") -> variant -> Comparison with V."""
  return {pop: compare_with_baseline({s.variant: s.sample(pop) for s in summaries})
          for pop in POPULATIONS}
