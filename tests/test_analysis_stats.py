"""Statistics of the report: ranking, top 10%, Welch + Bonferroni, fANOVA, binned marginals."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rnn_research.analysis import importance as imp
from rnn_research.analysis import records as rec
from rnn_research.analysis import stats
from rnn_research.declaration import Param

SPACE = {"learning_rate": Param("log", 1e-6, 1e-2), "one_minus_momentum": Param("log", 0.01, 1.0),
         "hidden_size": Param("log_int", 20, 200), "input_noise": Param("linear", 0.0, 1.0)}


def record(variant, number, test_nll, valid_nll, status=rec.COMPLETED, params=None):
  return rec.TrialRecord(variant=variant, number=number, status=status, params=params or {},
                         valid_metric=valid_nll, test_metric=test_nll)


def test_top_ten_percent_is_chosen_on_validation_not_test():
  # 25 trials: validation ranks them in reverse order of test NLL, so the top 10% (3 trials)
  # on validation are the three *worst* on test.
  trials = [record("V", i, test_nll=10.0 + i, valid_nll=100.0 - i) for i in range(25)]
  trials.append(record("V", 25, None, None, status=rec.DIVERGED))
  trials.append(record("V", 26, None, None, status=rec.RUNNING))
  [summary] = stats.summarize(trials)
  assert summary.counts == {"completed": 25, "diverged": 1, "failed": 0, "running": 1}
  assert sorted(summary.sample("top")) == [32.0, 33.0, 34.0]
  assert summary.best.number == 24
  assert len(summary.sample("all")) == 25


def test_a_metric_to_maximize_ranks_the_highest_first():
  trials = [record("V", i, test_nll=0.5 + 0.01 * i, valid_nll=0.4 + 0.01 * i) for i in range(10)]
  [summary] = stats.summarize(trials, "maximize")
  assert summary.best.number == 9 and list(summary.sample("top")) == [0.59]


def test_completed_trial_without_test_nll_is_counted_but_not_ranked():
  [summary] = stats.summarize([record("V", 0, 9.0, 9.1), record("V", 1, None, 9.0)])
  assert summary.counts["completed"] == 2
  assert [t.number for t in summary.ranked] == [0]


def test_welch_with_bonferroni_matches_scipy_and_verdicts():
  rng = np.random.default_rng(0)
  samples = {"V": rng.normal(9.0, 0.3, 20), "NFG": rng.normal(10.0, 0.3, 20),
             "CIFG": rng.normal(9.0, 0.3, 20), "NP": rng.normal(8.3, 0.3, 20),
             "NIG": np.array([9.0, 9.1])}  # too few to test
  results = stats.compare_with_baseline(samples, "V")
  tested = ("NFG", "CIFG", "NP")
  for variant in tested:
    p = scipy_stats.ttest_ind(samples[variant], samples["V"], equal_var=False).pvalue
    assert results[variant].p == pytest.approx(p, rel=1e-12)
    assert results[variant].p_bonferroni == pytest.approx(min(1.0, len(tested) * p), rel=1e-12)
  assert results["NFG"].verdict == stats.WORSE
  assert results["NP"].verdict == stats.BETTER
  assert results["CIFG"].verdict == stats.NO_DIFFERENCE
  assert results["NIG"].p is None and "2 trials" in results["NIG"].verdict
  assert results["NFG"].mean_difference == pytest.approx(
      samples["NFG"].mean() - samples["V"].mean())
  assert "V" not in results
  flipped = stats.compare_with_baseline(samples, "V", "maximize")  # e.g. an accuracy
  assert (flipped["NFG"].verdict, flipped["NP"].verdict) == (stats.BETTER, stats.WORSE)
  assert flipped["NFG"].p == results["NFG"].p


def test_bonferroni_decides_a_borderline_difference():
  # Raw p < 0.05 but 8 comparisons push it over: no difference after correction.
  v = np.array([9.0, 9.2, 9.4, 9.6, 9.8, 10.0])
  shifted = v + 0.5
  p = scipy_stats.ttest_ind(shifted, v, equal_var=False).pvalue
  assert 0.05 / 8 < p < 0.05  # the fixture itself is borderline
  samples = {"V": v, "NFG": shifted, **{f"X{i}": v + 0.01 * i for i in range(7)}}
  result = stats.compare_with_baseline(samples, "V")["NFG"]
  assert result.p_bonferroni == pytest.approx(8 * p)
  assert result.verdict == stats.NO_DIFFERENCE


def test_without_baseline_nothing_is_tested():
  results = stats.compare_with_baseline({"NFG": np.arange(5.0), "CIFG": np.arange(5.0)}, "V")
  assert all(r.p is None and r.verdict.startswith("not tested: V has 0") for r in
             results.values())


def synthetic_trials(rng, n, lr_effect=1.0):
  """Trials whose test NLL depends on log10(learning rate) only (plus a little noise)."""
  trials = []
  for i in range(n):
    params = {"learning_rate": 10 ** rng.uniform(-6, -2),
              "one_minus_momentum": 10 ** rng.uniform(-2, 0),
              "hidden_size": int(rng.integers(20, 201)), "input_noise": rng.uniform()}
    nll = 9.0 + lr_effect * (math.log10(params["learning_rate"]) + 4) ** 2
    trials.append(record("V", i, nll + rng.normal(0, 0.02), nll, params=params))
  return trials


def test_fanova_finds_the_learning_rate_and_is_seeded(rng):
  trials = synthetic_trials(rng, 40)
  first = imp.fanova("V", trials, SPACE)
  assert first.reason is None
  assert sum(first.fractions.values()) == pytest.approx(1.0)
  assert first.fractions["learning_rate"] > 0.8
  assert max(first.fractions[n] for n in ("one_minus_momentum", "hidden_size",
                                          "input_noise")) < 0.05
  assert imp.fanova("V", trials, SPACE).fractions == first.fractions


def test_fanova_over_a_categorical_param(rng):
  space = {"learning_rate": SPACE["learning_rate"],
           "cell": Param("categorical", choices=("lstm", "gru", "elman"))}
  trials = []
  for i in range(40):
    params = {"learning_rate": 10 ** rng.uniform(-6, -2), "cell": ("lstm", "gru", "elman")[i % 3]}
    nll = 9.0 + 2.0 * (params["cell"] == "elman") + rng.normal(0, 0.02)
    trials.append(record("V", i, nll, nll, params=params))
  fractions = imp.fanova("V", trials, space).fractions
  assert fractions["cell"] > 0.8 and fractions["learning_rate"] < 0.1


def test_fanova_needs_enough_trials(rng):
  result = imp.fanova("V", synthetic_trials(rng, imp.MIN_FANOVA_TRIALS - 1), SPACE)
  assert result.fractions == {} and "not enough trials" in result.reason


def test_sampling_axis():
  assert SPACE["learning_rate"].axis(1e-4) == pytest.approx(-4)
  assert SPACE["hidden_size"].axis(100) == pytest.approx(2)
  assert SPACE["input_noise"].axis(0.25) == 0.25
  assert Param("categorical", choices=("a", "b")).axis("b") == 1.0


def test_binned_marginal_on_log_axis():
  x = np.array([1e-6, 2e-6, 1e-4, 2e-4, 5e-4, 1e-2])
  y = np.array([10.0, 12.0, 9.0, 8.0, 7.0, 11.0])
  centres, medians, counts = imp.binned_marginal(x, y, num_bins=2, log=True)
  # log10 range [-6, -2] splits at -4: [1e-6, 2e-6] and [1e-4 .. 1e-2].
  np.testing.assert_allclose(centres, [1e-5, 1e-3])
  np.testing.assert_allclose(medians, [11.0, 8.5])
  np.testing.assert_array_equal(counts, [2, 4])
