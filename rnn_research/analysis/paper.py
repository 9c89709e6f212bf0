"""The paper's conclusions on JSB Chorales (Greff et al. 2017), checked one by one against a sweep:
the report's "Compared with the paper" section.

Each claim gets what the run shows and a verdict: "agrees", "partly", "disagrees", or "not
tested" (too few trials). Significance is the report's: Welch's t-test against V, Bonferroni-
corrected, over all completed trials and over the best 10% chosen on validation NLL
(`stats.compare_summaries`); importance is the mean over variants of fANOVA's fractions.
"""
import dataclasses

import numpy as np

from rnn_research.analysis import importance as imp
from rnn_research.analysis import stats

AGREES, PARTLY, DISAGREES, NOT_TESTED = "agrees", "partly", "disagrees", "not tested"
PUBLISHED_TOP_RANGE = (8.4, 8.8)  # nats per frame, the paper's Fig. 3 (best 10%), read off its axis
SMALL_INTERACTIONS = 0.25  # "small": interactions explain less than this share of the variance
POPULATION_NAMES = {"all": "all trials", "top": f"best {stats.TOP_FRACTION:.0%}"}


@dataclasses.dataclass(frozen=True)
class Check:
  claim: str
  shows: str
  verdict: str


def _verdicts(comparisons: dict, variant: str) -> dict:
  """population -> the verdict of `variant` against V (None where it has no comparison)."""
  return {p: comparisons[p][variant].verdict if variant in comparisons[p] else None
          for p in stats.POPULATIONS}


def _tested(verdict: str | None) -> bool:
  return verdict in (stats.WORSE, stats.BETTER, stats.NO_DIFFERENCE)


def _verdict_text(comparisons: dict, variant: str) -> str:
  """E.g. "NFG: significantly worse (all trials, p=1.2e-05), no difference (best 10%, p=0.41)"."""
  parts = []
  for population, name in POPULATION_NAMES.items():
    c = comparisons[population].get(variant)
    if c is None:
      parts.append(f"no trials ({name})")
    elif c.p_bonferroni is None:
      parts.append(f"{c.verdict} ({name})")
    else:
      parts.append(f"{c.verdict} ({name}, Δ {c.mean_difference:+.3f}, p={c.p_bonferroni:.2g})")
  return f"{variant}: " + ", ".join(parts)


def _expect_each(comparisons: dict, variants, wanted: str, claim: str) -> Check:
  """A claim that each of `variants` gets the verdict `wanted` in both populations."""
  verdicts = [v for variant in variants for v in _verdicts(comparisons, variant).values()]
  if not any(_tested(v) for v in verdicts):
    verdict = NOT_TESTED
  elif all(v == wanted for v in verdicts):
    verdict = AGREES
  elif any(v == wanted for v in verdicts):
    verdict = PARTLY
  else:
    verdict = DISAGREES
  return Check(claim, "; ".join(_verdict_text(comparisons, v) for v in variants), verdict)


def no_variant_improves(summaries, comparisons) -> Check:
  claim = "No variant significantly improves on V."
  better = sorted({c.variant for p in stats.POPULATIONS for c in comparisons[p].values()
                   if c.verdict == stats.BETTER})
  tested = [c for p in stats.POPULATIONS for c in comparisons[p].values() if _tested(c.verdict)]
  if not tested:
    return Check(claim, "no variant could be tested against V", NOT_TESTED)
  if better:
    return Check(claim, "; ".join(_verdict_text(comparisons, v) for v in better), DISAGREES)
  return Check(claim, f"none of {len({c.variant for c in tested})} variants tested is "
                      "significantly better, over all trials or the best 10%", AGREES)


def mean_importance(importances: list) -> tuple[dict, int]:
  """The mean over variants of fANOVA's fractions, and how many variants had them."""
  usable = [r.fractions for r in importances if r.fractions]
  if not usable:
    return {}, 0
  return {name: float(np.mean([f[name] for f in usable])) for name in usable[0]}, len(usable)


def learning_rate_first(importances: list) -> Check:
  claim = ("The learning rate is the most important hyperparameter (fANOVA), then the hidden "
           "size.")
  fractions, count = mean_importance(importances)
  if not fractions:
    return Check(claim, "fANOVA had too few trials in every variant", NOT_TESTED)
  main = sorted((n for n in fractions if n != imp.INTERACTIONS), key=lambda n: -fractions[n])
  first = sum(1 for r in importances
              if r.fractions and max((n for n in r.fractions if n != imp.INTERACTIONS),
                                     key=r.fractions.get) == "learning_rate")
  shows = (f"mean over {count} variants: " + ", ".join(
      f"{n.replace('_', ' ')} {fractions[n]:.0%}" for n in main)
           + f"; the learning rate ranks first in {first} of {count} variants")
  if main[:2] == ["learning_rate", "hidden_size"]:
    verdict = AGREES
  elif main[0] == "learning_rate":
    verdict = PARTLY
  else:
    verdict = DISAGREES
  return Check(claim, shows, verdict)


def input_noise_does_not_help(summaries) -> Check:
  """Spearman's rank correlation of input noise with test NLL over every completed trial of
  every variant (random search samples it independently of the rest)."""
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  claim = "Input noise hurts or does not help on JSB."
  trials = [t for s in summaries for t in s.ranked if "input_noise" in t.params]
  if len(trials) < stats.MIN_TEST_SAMPLES:
    return Check(claim, f"{len(trials)} completed trials", NOT_TESTED)
  result = scipy_stats.spearmanr([t.params["input_noise"] for t in trials],
                                 [t.test_metric for t in trials])
  rho, p = float(result.statistic), float(result.pvalue)
  shows = (f"Spearman correlation of input noise with test NLL over {len(trials)} trials: "
           f"ρ = {rho:+.2f} (p = {p:.2g})")
  helps = rho < 0 and p < stats.ALPHA
  hurts = rho > 0 and p < stats.ALPHA
  return Check(claim, shows + (": more noise, worse" if hurts else ": no significant effect"
                               if not helps else ": more noise, better"),
               DISAGREES if helps else AGREES)


def small_interactions(importances: list) -> Check:
  claim = "Interactions between hyperparameters are small."
  fractions, count = mean_importance(importances)
  if not fractions:
    return Check(claim, "fANOVA had too few trials in every variant", NOT_TESTED)
  share = fractions[imp.INTERACTIONS]
  return Check(claim, f"interactions explain {share:.0%} of the variance (mean over {count} "
                      f"variants; small: below {SMALL_INTERACTIONS:.0%})",
               AGREES if share < SMALL_INTERACTIONS else DISAGREES)


def top_range(summaries) -> Check:
  low, high = PUBLISHED_TOP_RANGE
  claim = f"The best 10% of trials lie roughly in {low}–{high} nats per frame."
  tops = {s.variant: s.sample("top") for s in summaries if len(s.sample("top"))}
  if not tops:
    return Check(claim, "no completed trials", NOT_TESTED)
  inside = [v for v, t in tops.items() if low <= t.mean() <= high]
  values = np.concatenate(list(tops.values()))
  best = ", ".join(f"{s.variant} {s.best.test_metric:.2f}" for s in summaries if s.best)
  shows = (f"best-10% test NLL from {values.min():.2f} to {values.max():.2f}; the mean of the "
           f"best 10% lies in the range for {len(inside)} of {len(tops)} variants; best trial "
           f"per variant: {best}")
  verdict = (AGREES if len(inside) == len(tops) else PARTLY if inside else DISAGREES)
  return Check(claim, shows, verdict)


def checks(summaries, comparisons, importances) -> list[Check]:
  """Every claim, in the order of the issue that asked for them."""
  return [no_variant_improves(summaries, comparisons),
          _expect_each(comparisons, ("NFG", "NOAF"), stats.WORSE,
                       "NFG (no forget gate) and NOAF (no output activation) are significantly "
                       "worse than V."),
          _expect_each(comparisons, ("CIFG", "NP"), stats.NO_DIFFERENCE,
                       "CIFG and NP are not significantly different from V."),
          learning_rate_first(importances),
          input_noise_does_not_help(summaries),
          small_interactions(importances),
          top_range(summaries)]


def table(results: list[Check]) -> str:
  from rnn_research.analysis import tables  # pylint: disable=g-import-not-at-top
  return tables.markdown_table(["the paper says", "this run shows", "verdict"],
                               [[c.claim, c.shows, c.verdict] for c in results])
