"""The sweep contract, and loading every trial of a sweep into plain records.

A sweep directory holds `study.db`, an Optuna storage with one study per LSTM variant named
`odyssey/<variant>`, and one workdir per trial with a `metrics.jsonl` of per-epoch metrics. The
launcher writes these names; this module is the one place the report reads them.
"""
import dataclasses
import json
import math
import os

from rnn_research.database import masked

VARIANTS = ("V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")  # the paper's order
BASELINE_VARIANT = "V"
STUDY_PREFIX = "odyssey/"
STUDY_DB = "study.db"
METRICS_FILE = "metrics.jsonl"

# Searched hyperparameters: (low, high, scale) where the scale is the one they were sampled on:
# "log" log-uniform, "linear" uniform, "log1m" 1 - log-uniform (momentum = 1 - 10^u).
SEARCH_SPACE = {
    "learning_rate": (1e-6, 1e-2, "log"),
    "momentum": (0.0, 0.99, "log1m"),
    "hidden_size": (20, 200, "log"),
    "input_noise": (0.0, 1.0, "linear"),
}
# A launcher may record momentum as sampled, as 1 - momentum under this name.
ONE_MINUS_MOMENTUM = "one_minus_momentum"

# Trial statuses as the report counts them.
COMPLETED, DIVERGED, FAILED, RUNNING = "completed", "diverged", "failed", "running"
STATUSES = (COMPLETED, DIVERGED, FAILED, RUNNING)

# Keys of one metrics.jsonl line.
METRIC_KEYS = ("epoch", "step", "train_loss", "valid_nll", "grad_norm", "param_norm", "wall_time")


class SweepError(ValueError):
  """A sweep directory or storage that the report cannot read."""


@dataclasses.dataclass(frozen=True)
class TrialRecord:
  """One trial of one variant's study, as the launcher recorded it.

  `valid_nll` and `test_nll` are None where the trial has none (diverged, running, or a
  completed trial whose record lacks them); `params` maps the SEARCH_SPACE names to values.
  """
  variant: str
  number: int
  status: str
  params: dict
  valid_nll: float | None = None
  test_nll: float | None = None
  best_epoch: int | None = None
  epochs: int | None = None
  num_params: int | None = None
  workdir: str | None = None
  baseline_nll: float | None = None
  data: str | None = None
  diverged_step: int | None = None


def storage_url(sweep_dir: str, storage: str | None = None) -> str:
  """The storage URL: `storage` if given, else `sqlite:///<sweep_dir>/study.db` (must exist)."""
  if storage:
    return storage
  path = os.path.join(sweep_dir, STUDY_DB)
  if not os.path.isfile(path):
    raise SweepError(
        f"no sweep database at {path}: a sweep directory must hold {STUDY_DB}, the Optuna "
        f"SQLite storage with one study per variant named '{STUDY_PREFIX}<variant>' (or pass "
        "--storage=URL for a database elsewhere)")
  return f"sqlite:///{os.path.abspath(path)}"


def _status(trial) -> str:
  import optuna  # pylint: disable=g-import-not-at-top

  state = trial.state
  if state == optuna.trial.TrialState.COMPLETE:
    return COMPLETED
  if state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
    return RUNNING
  if state == optuna.trial.TrialState.FAIL and trial.user_attrs.get("status") == DIVERGED:
    return DIVERGED
  return FAILED


def _finite(value) -> float | None:
  """`value` as a float, or None where it is missing or not finite."""
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _params(params: dict) -> dict:
  """The trial's params, with `momentum` derived where only 1 - momentum was recorded."""
  params = dict(params)
  if ONE_MINUS_MOMENTUM in params and "momentum" not in params:
    params["momentum"] = 1.0 - params.pop(ONE_MINUS_MOMENTUM)
  return params


def _record(variant: str, trial) -> TrialRecord:
  attrs = trial.user_attrs
  status = _status(trial)
  valid = attrs.get("valid_nll", trial.value if status == COMPLETED else None)
  return TrialRecord(
      variant=variant, number=trial.number, status=status, params=_params(trial.params),
      valid_nll=_finite(valid), test_nll=_finite(attrs.get("test_nll")),
      best_epoch=attrs.get("best_epoch"), epochs=attrs.get("epochs"),
      num_params=attrs.get("num_params"),
      workdir=attrs.get("workdir"), baseline_nll=_finite(attrs.get("baseline_nll")),
      data=attrs.get("data"), diverged_step=attrs.get("diverged_step"))


def study_variants(storage: str) -> list[str]:
  """The variants with an `odyssey/<variant>` study in `storage`, known variants first."""
  import optuna  # pylint: disable=g-import-not-at-top

  names = optuna.get_all_study_names(storage)
  found = [n[len(STUDY_PREFIX):] for n in names if n.startswith(STUDY_PREFIX)]
  order = {v: i for i, v in enumerate(VARIANTS)}
  return sorted(found, key=lambda v: (order.get(v, len(order)), v))


def load_trials(sweep_dir: str, storage: str | None = None) -> list[TrialRecord]:
  """Every trial of every `odyssey/<variant>` study of the sweep, in variant order.

  Raises SweepError if the storage is missing or holds no odyssey study.
  """
  import optuna  # pylint: disable=g-import-not-at-top

  url = storage_url(sweep_dir, storage)
  variants = study_variants(url)
  if not variants:
    raise SweepError(
        f"no Optuna study named '{STUDY_PREFIX}<variant>' in {masked(url)}: the launcher "
        f"creates one per LSTM variant ({', '.join(STUDY_PREFIX + v for v in VARIANTS[:2])}, ...)")
  records = []
  for variant in variants:
    trials = optuna.load_study(study_name=STUDY_PREFIX + variant,
                               storage=url).get_trials(deepcopy=False)
    # An interrupted trial that was retried is its retry (same params, workdir and seed,
    # resumed from its checkpoint): counting both would count it twice, once as failed.
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    records.extend(_record(variant, t) for t in trials if t.number not in retried)
  return records


def read_metrics(path: str) -> list[dict] | None:
  """The per-epoch metrics of a trial's `metrics.jsonl`, or None if the file does not exist.

  Lines that are not JSON objects (blank, or cut off mid-write by a killed trial) are skipped.
  """
  if not os.path.isfile(path):
    return None
  rows = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict):
        rows.append(row)
  return rows
