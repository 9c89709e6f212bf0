"""The sweep contract, and loading every trial of a sweep into plain records.

A sweep directory holds `sweep.json` (the study file and its config, whose `study` section is
the study's declaration: rnn_research.declaration), `study.db`, an Optuna storage with one study
per variant named `<study>/<variant>`, and one workdir per trial with a `metrics.jsonl` of
per-epoch metrics. The launcher writes these names; this module is the one place the report
reads them.
"""
import dataclasses
import json
import math
import os

from rnn_research import declaration
from rnn_research.database import masked

SWEEP_FILE = "sweep.json"
STUDY_DB = "study.db"
METRICS_FILE = "metrics.jsonl"

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

  `valid_metric` and `test_metric` are the declared metric (`valid_<metric>`, `test_<metric>`),
  None where the trial has none (diverged, running, or a completed trial whose record lacks
  them); `params` maps the declared space's names to values.
  """
  variant: str
  number: int
  status: str
  params: dict
  valid_metric: float | None = None
  test_metric: float | None = None
  best_epoch: int | None = None
  epochs: int | None = None
  num_params: int | None = None
  workdir: str | None = None
  baseline_nll: float | None = None
  data: str | None = None
  diverged_step: int | None = None


def load_study(sweep_dir: str) -> declaration.Study:
  """The declaration of the sweep's study, from its sweep.json (one written before studies
  declared themselves completed: declaration.complete_sweep_record)."""
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.isfile(path):
    raise SweepError(f"no {SWEEP_FILE} in {sweep_dir}: the launcher writes it, with the study's "
                     "declaration the report reads")
  with open(path) as f:
    record = declaration.complete_sweep_record(json.load(f))
  if "study" not in record.get("config", {}):
    raise SweepError(f"{path} has no study declaration (config.study), and its study file "
                     f"{record.get('study')!r} is none of the built-in studies "
                     f"{list(declaration.BUILT_IN)} that can be given theirs")
  try:
    return declaration.Study.from_dict(record["config"]["study"])
  except (TypeError, ValueError) as error:
    raise SweepError(f"{path}: its study declaration does not hold: {error}") from error


def selected_variants(sweep_dir: str) -> list[str]:
  """The variants the sweep runs (its config.variants)."""
  with open(os.path.join(sweep_dir, SWEEP_FILE)) as f:
    return list(json.load(f)["config"]["variants"])


def storage_url(sweep_dir: str, storage: str | None = None) -> str:
  """The storage URL: `storage` if given, else `sqlite:///<sweep_dir>/study.db` (must exist)."""
  if storage:
    return storage
  path = os.path.join(sweep_dir, STUDY_DB)
  if not os.path.isfile(path):
    raise SweepError(
        f"no sweep database at {path}: a sweep directory must hold {STUDY_DB}, the Optuna "
        "SQLite storage with one study per variant named '<study>/<variant>' (or pass "
        "--storage=URL for a database elsewhere)")
  return f"sqlite:///{os.path.abspath(path)}"


def status(trial) -> str:
  """The report's status of an Optuna trial."""
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


def _record(study: declaration.Study, variant: str, trial) -> TrialRecord:
  attrs = trial.user_attrs
  trial_status = status(trial)
  valid = attrs.get(study.objective, trial.value if trial_status == COMPLETED else None)
  return TrialRecord(
      variant=variant, number=trial.number, status=trial_status, params=dict(trial.params),
      valid_metric=_finite(valid), test_metric=_finite(attrs.get(study.test_key)),
      best_epoch=attrs.get("best_epoch"), epochs=attrs.get("epochs"),
      num_params=attrs.get("num_params"),
      workdir=attrs.get("workdir"), baseline_nll=_finite(attrs.get("baseline_nll")),
      data=attrs.get("data"), diverged_step=attrs.get("diverged_step"))


def study_variants(study: declaration.Study, storage: str) -> list[str]:
  """The variants with a study `<study>/<variant>` in `storage`: the declared ones in the
  declared order, then any others (a study whose module accepts undeclared names) by name."""
  import optuna  # pylint: disable=g-import-not-at-top

  prefix = study.study_name("")
  found = {n[len(prefix):] for n in optuna.get_all_study_names(storage) if n.startswith(prefix)}
  return [v for v in study.variants if v in found] + sorted(found - set(study.variants))


def load_trials(sweep_dir: str, study: declaration.Study,
                storage: str | None = None) -> list[TrialRecord]:
  """Every trial of every variant study of the sweep, in the declared order of variants.

  Raises SweepError if the storage is missing or holds no study of the declared variants.
  """
  import optuna  # pylint: disable=g-import-not-at-top

  url = storage_url(sweep_dir, storage)
  variants = study_variants(study, url)
  if not variants:
    raise SweepError(
        f"no Optuna study named '{study.name}/<variant>' in {masked(url)}: the launcher creates "
        f"one per variant ({', '.join(map(study.study_name, list(study.variants)[:2]))}, ...)")
  records = []
  for variant in variants:
    trials = optuna.load_study(study_name=study.study_name(variant),
                               storage=url).get_trials(deepcopy=False)
    # An interrupted trial that was retried is its retry (same params, workdir and seed,
    # resumed from its checkpoint): counting both would count it twice, once as failed.
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    records.extend(_record(study, variant, t) for t in trials if t.number not in retried)
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


def training_time(workdir: str) -> float | None:
  """Seconds a trial in `workdir` trained, across resumes: the wall_time of its last epoch in
  metrics.jsonl (None before its first epoch)."""
  rows = read_metrics(os.path.join(workdir, METRICS_FILE)) or []
  times = [r["wall_time"] for r in rows if isinstance(r.get("wall_time"), (int, float))]
  return float(times[-1]) if times else None
