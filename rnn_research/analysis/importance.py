"""Hyperparameter importance by fANOVA (Hutter et al. 2014), as in the Odyssey paper's Fig. 5.

Optuna's FanovaImportanceEvaluator fits a random forest from hyperparameters to the test metric
and splits the variance of its prediction into a main effect per hyperparameter; what the main
effects leave unexplained is the share of the interactions ("higher order" in the paper).
The forest sees each hyperparameter on the scale the study declares it was sampled on (log10
of a log-scale param: declaration.Param.axis), because fANOVA integrates over the search space
and a linear axis would let the top decade of a log range dominate.
"""
import dataclasses

import numpy as np

from rnn_research.analysis import records as rec

MIN_FANOVA_TRIALS = 10
SEED = 0
INTERACTIONS = "interactions"


@dataclasses.dataclass(frozen=True)
class Importance:
  """fANOVA of one variant: `fractions` maps each hyperparameter, and INTERACTIONS, to its
  fraction of the variance of the predicted test metric (they sum to 1); `reason` says why
  there are none (then `fractions` is empty)."""
  variant: str
  num_trials: int
  fractions: dict
  reason: str | None = None


def _distributions(trials: list[rec.TrialRecord], space: dict) -> dict:
  """An Optuna distribution per hyperparameter on its sampling axis, wide enough for every
  trial (a categorical param keeps its choices)."""
  import optuna  # pylint: disable=g-import-not-at-top

  dists = {}
  for name, param in space.items():
    if param.scale == "categorical":
      dists[name] = param.distribution()
      continue
    ends = [param.axis(param.low), param.axis(param.high)]
    values = [param.axis(t.params[name]) for t in trials]
    dists[name] = optuna.distributions.FloatDistribution(min(ends + values), max(ends + values))
  return dists


def fanova(variant: str, trials: list[rec.TrialRecord], space: dict) -> Importance:
  """fANOVA of the test metric over `trials` (completed, with a test metric and every
  hyperparameter of the declared `space`, {name: declaration.Param})."""
  import optuna  # pylint: disable=g-import-not-at-top

  usable = [t for t in trials if t.test_metric is not None
            and all(name in t.params for name in space)]
  if len(usable) < MIN_FANOVA_TRIALS:
    return Importance(variant, len(usable), {},
                      f"not enough trials ({len(usable)} completed, needs {MIN_FANOVA_TRIALS})")
  if np.ptp([t.test_metric for t in usable]) == 0:
    return Importance(variant, len(usable), {}, "every trial has the same test metric")
  dists = _distributions(usable, space)
  verbosity = optuna.logging.get_verbosity()
  optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per variant
  try:
    study = optuna.create_study(direction="minimize")
  finally:
    optuna.logging.set_verbosity(verbosity)
  on_axis = lambda name, value: (value if space[name].scale == "categorical"
                                 else space[name].axis(value))
  study.add_trials([
      optuna.trial.create_trial(
          params={n: on_axis(n, t.params[n]) for n in dists}, distributions=dists,
          value=t.test_metric)
      for t in usable])
  try:
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=SEED)
  except ImportError as e:  # Optuna's fANOVA needs scikit-learn for its forest
    return Importance(variant, len(usable), {}, f"fANOVA unavailable: {e}")
  main_effects = evaluator.evaluate(study)
  fractions = {name: float(main_effects[name]) for name in space}
  fractions[INTERACTIONS] = max(0.0, 1.0 - sum(fractions.values()))
  return Importance(variant, len(usable), fractions)


def binned_marginal(x: np.ndarray, y: np.ndarray, num_bins: int, log: bool):
  """Median of y in `num_bins` equal-width bins of x (on a log10 axis if `log`).

  Returns (bin centres, medians, counts) for the bins that hold at least one point.
  """
  u = np.log10(x) if log else np.asarray(x, float)
  edges = np.linspace(u.min(), u.max(), num_bins + 1)
  index = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, num_bins - 1)
  centres, medians, counts = [], [], []
  for b in range(num_bins):
    inside = y[index == b]
    if len(inside):
      centre = (edges[b] + edges[b + 1]) / 2
      centres.append(10 ** centre if log else centre)
      medians.append(float(np.median(inside)))
      counts.append(len(inside))
  return np.array(centres), np.array(medians), np.array(counts)
