"""A sweep as Optuna studies: one study per variant, named "<name>/<variant>", in one storage
(an SQLite file in the sweep directory by default, or any database URL Optuna accepts).

Trial records (what the report reads, see rnn_research/analysis):
  completed: state COMPLETE, value = the declared metric at the best validation epoch
             (valid_<metric>), user_attrs status="completed", the result's valid_* and test_*
             metrics, best_epoch, num_params, baseline_nll, variant, data, workdir
  diverged:  state FAIL, user_attrs status="diverged", diverged_step (and the rest but NLLs)
  failed:    state FAIL, user_attrs status="failed", error ("<type>: <message>"), traceback
             (the last TRACEBACK_CHARS; the whole one in the workdir's error.txt): the trial
             raised, and its worker went on with the next trial
  interrupted (a worker was killed): state FAIL without status.
A failed or interrupted trial is retried: enqueued again with the same params, workdir and
seed, it resumes from the trial's checkpoint; the retry's user_attrs hold retry_of (the trial
it repeats) and retries (how many times the original trial has been retried). At most
`max_retries` times (the study config's key): after that the trial is failed for good, so a
trial that always raises, or kills its worker, cannot occupy the workers forever. A launcher
retries the RUNNING trials it finds at start (`requeue_interrupted`); workers that share a
study with live workers (SLURM, several hosts) send heartbeats instead, and retry the trials
whose heartbeat stopped (`open_storage(url, heartbeat=...)`).

Workers claim a study's trials one worker at a time (`claim_lock`): a lock held by the database
(PostgreSQL advisory lock, MySQL GET_LOCK), released by the server when its holder dies, so
claiming is safe across machines; with SQLite (one machine) a file lock in the sweep directory.
"""
import contextlib
import functools
import hashlib
import pathlib
import sys
import threading
import warnings

import optuna

from rnn_research.database import masked
from rnn_research.filelock import file_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study opened

DB_FILE = "study.db"
DEFAULT_SEED = 0  # the sampler's seed for a study config without a `seed` key
TRIALS_DIR = "trials"
ERROR_FILE = "error.txt"  # in a failed trial's workdir: its traceback
# The end of a traceback kept on the trial: a MySQL TEXT column holds 64 KiB.
TRACEBACK_CHARS = 8000
# SQL of a named lock held by a connection: (lock, unlock) per SQLAlchemy dialect.
DATABASE_LOCKS = {
    "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
    "mysql": ("SELECT GET_LOCK(:name, -1)", "SELECT RELEASE_LOCK(:name)"),
}


def storage_url(sweep_dir, storage: str | None = None) -> str:
  return storage or f"sqlite:///{pathlib.Path(sweep_dir).absolute() / DB_FILE}"


def open_storage(url: str, heartbeat: int | None = None,
                 max_retries: int = 0) -> optuna.storages.BaseStorage:
  """The storage at `url`, or a ValueError that names it when it cannot be reached. With a
  `heartbeat` (seconds), a RUNNING trial whose heartbeat is older than 3 heartbeats is stale:
  `claim_trials` fails it and retries it unless it has had `max_retries` retries."""
  options = {} if heartbeat is None else dict(
      heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
      heartbeat_stale_trial_callback=functools.partial(_enqueue_retry, max_retries=max_retries))
  try:
    with _quiet():
      return optuna.storages.RDBStorage(url, **options)
  except Exception as error:  # SQLAlchemy raises many kinds; all mean the same to a user here
    raise ValueError(f"cannot open the study database {masked(url)!r}: {error}") from error


def check_storage(url: str) -> None:
  """A ValueError naming `url` when its database cannot be reached. Writes nothing: creates no
  tables, and opens no SQLite file (connecting would create it)."""
  if url.startswith("sqlite"):
    return
  try:
    with _engine(url).connect():
      pass
  except Exception as error:  # SQLAlchemy raises many kinds; all mean the same to a user here
    raise ValueError(f"cannot open the study database {masked(url)!r}: "
                     f"{str(error).strip().splitlines()[0]}") from error


@contextlib.contextmanager
def _quiet():
  """Silences Optuna's warnings that heartbeats are experimental and meant for optimize()."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    yield


def sampler_seed(config) -> int:
  """The seed of the sweep's sampler: the study config's `seed`, or DEFAULT_SEED."""
  return config.get("seed", DEFAULT_SEED)


def open_study(storage, study, variant: str, seed: int = DEFAULT_SEED) -> optuna.Study:
  """The Optuna study of `variant` of the declared `study` (rnn_research.declaration.Study),
  sampling with a `TrialSeededSampler(seed)`."""
  return optuna.create_study(storage=storage, study_name=study.study_name(variant),
                             direction=study.direction, sampler=TrialSeededSampler(seed),
                             load_if_exists=True)


class TrialSeededSampler(optuna.samplers.BaseSampler):
  """Random search in which each value is drawn from its own generator, seeded by (seed, study
  name, trial number, param name): workers that share a study sample the same trials as one
  worker would, in whatever order they claim them, and a rerun of the sweep samples the same
  trials again. (A RandomSampler's one generator per process cannot: its draws would depend on
  which worker claimed which trial.)"""

  def __init__(self, seed: int):
    self.seed = seed

  def infer_relative_search_space(self, study, trial):
    return {}

  def sample_relative(self, study, trial, search_space):
    return {}

  def sample_independent(self, study, trial, param_name, param_distribution):
    key = f"{self.seed}/{study.study_name}/{trial.number}/{param_name}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
    return optuna.samplers.RandomSampler(seed=seed).sample_independent(
        study, trial, param_name, param_distribution)


def is_done(trial: optuna.trial.FrozenTrial, max_retries: int) -> bool:
  """Finished for good: completed, failed as diverged, or failed (raised, interrupted) with
  its `max_retries` retries spent."""
  state = optuna.trial.TrialState
  if trial.state == state.COMPLETE:
    return True
  return trial.state == state.FAIL and (trial.user_attrs.get("status") == "diverged"
                                        or trial.user_attrs.get("retries", 0) >= max_retries)


def outcome(trial: optuna.trial.FrozenTrial) -> str:
  """How a finished trial ended: "completed", "diverged", or "failed: <its error>" ("failed:
  interrupted" when its worker was killed)."""
  if trial.state == optuna.trial.TrialState.COMPLETE:
    return "completed"
  if trial.user_attrs.get("status") == "diverged":
    return "diverged"
  return f"failed: {trial.user_attrs.get('error', 'interrupted').splitlines()[0]}"


def requeue_interrupted(study: optuna.Study, max_retries: int) -> int:
  """Fails every RUNNING trial (its worker is gone: call this before starting workers) and
  retries it unless it has had `max_retries` retries. Returns how many were failed."""
  running = running_trials(study)
  for trial in running:
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    _enqueue_retry(study, trial, max_retries)
  return len(running)


def _enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retries: int) -> None:
  """Enqueues `trial` (failed, interrupted) again with its params, workdir and seed, unless it
  has had `max_retries` retries. (Optuna's RetryHeartbeatStaleTrialCallback would copy every
  user attr, the failed attempt's error and retry_of among them.)"""
  retries = trial.user_attrs.get("retries", 0)
  if retries >= max_retries:
    print(f"{study.study_name} trial {trial.number} failed for good after {retries} retries "
          f"(max_retries={max_retries})", file=sys.stderr, flush=True)
    return
  attrs = {key: trial.user_attrs[key] for key in ("workdir", "seed", "pack")
           if key in trial.user_attrs}
  study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": trial.number,
                                                "retries": retries + 1})


def running_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
  return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def adopt_running(storage, study: optuna.Study) -> None:
  """Records a heartbeat for every RUNNING trial, so that one no worker beats for (left by a
  run without heartbeats) turns stale after the grace period and is retried, instead of being
  waited for forever. (Its live worker, if any, goes on beating.)"""
  for trial in running_trials(study):
    storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access


@functools.cache
def _engine(url: str):
  import sqlalchemy  # pylint: disable=g-import-not-at-top  (Optuna's dependency)
  return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)


@contextlib.contextmanager
def database_lock(url: str, name: str):
  """An exclusive lock named `name` between every process that uses the database at `url`,
  held by one connection (the server releases it when the connection drops)."""
  import sqlalchemy  # pylint: disable=g-import-not-at-top
  engine = _engine(url)
  if engine.dialect.name not in DATABASE_LOCKS:
    raise ValueError(f"workers on several machines need PostgreSQL or MySQL (or SQLite on one "
                     f"machine), got {engine.dialect.name} in {masked(url)!r}")
  lock, unlock = DATABASE_LOCKS[engine.dialect.name]
  key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
  with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
    connection.execute(sqlalchemy.text(lock), {"key": key, "name": name[:64]})
    try:
      yield
    finally:
      connection.execute(sqlalchemy.text(unlock), {"key": key, "name": name[:64]})


def claim_lock(url: str, sweep_dir, name: str):
  """The lock that `claim_trials` holds for the study `name`: the database's own lock, or with
  SQLite (one machine) a file lock in the sweep directory."""
  if url.startswith("sqlite"):
    return file_lock(pathlib.Path(sweep_dir) / ".claim.lock")
  return database_lock(url, f"rnn_research claim {name}")


def claim_trials(study: optuna.Study, target: int, distributions, lock, size: int = 1,
                 shared: tuple[str, ...] = (), *, max_retries: int) -> list[optuna.Trial]:
  """Up to `size` trials to train together, fewer when the study is near `target` trials done
  or taken, none when it has them all. Enqueued retries come first: the first waiting one and
  those after it of the same pack (an interrupted pack is claimed whole again, in its order,
  and resumes from its checkpoint). Otherwise new trials: those after the first are sampled
  with its values of the `shared` params (e.g. the hidden size of a pack). Holds `lock`
  (see `claim_lock`) throughout; first retries the stale trials of dead workers, and starts the
  heartbeats of the claimed trials when the storage has heartbeats. A trial failed with its
  `max_retries` retries spent counts as done."""
  with lock, _quiet():
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    taken = sum(is_done(t, max_retries) or t.state == optuna.trial.TrialState.RUNNING
                for t in trials)
    if not waiting and taken >= target:
      return []
    claimed = [study.ask(distributions) for _ in range(_retry_pack(waiting, shared, size))]
    while not waiting and len(claimed) < size and taken + len(claimed) < target:
      study.enqueue_trial({name: claimed[0].params[name] for name in shared})
      claimed.append(study.ask(distributions))
    storage = study._storage  # pylint: disable=protected-access
    if storage.get_heartbeat_interval() is not None:
      for trial in claimed:
        storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access
    return claimed


def _retry_pack(waiting: list[optuna.trial.FrozenTrial], shared: tuple[str, ...],
                size: int) -> int:
  """How many waiting trials to claim together (at least 1: a new trial when none waits): the
  first and those after it of the same pack (user attr "pack", set when a worker claims them)
  and the same values of the `shared` params, at most `size`. (Optuna hands out waiting trials
  in the order they were enqueued.)"""
  values = [(t.user_attrs.get("pack"),
             {name: t.system_attrs.get("fixed_params", {}).get(name) for name in shared})
            for t in waiting]
  count = 1
  while count < min(size, len(values)) and values[count] == values[0]:
    count += 1
  return count


@contextlib.contextmanager
def heartbeats(storage, trials: list[optuna.Trial]):
  """While in the block, a thread records the trials' heartbeats (training holds the main
  thread); nothing when the storage has no heartbeat."""
  interval = storage.get_heartbeat_interval()
  if interval is None:
    yield
    return
  stop = threading.Event()

  def beat():
    while not stop.wait(interval):
      try:
        for trial in trials:
          storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access
      except Exception as error:  # pylint: disable=broad-except  (the next beat may get through)
        print(f"heartbeat not recorded: {error}", file=sys.stderr, flush=True)

  thread = threading.Thread(target=beat, daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()


def report(trial: optuna.Trial, objective: str, line: dict) -> None:
  """Reports an epoch's metrics.jsonl line to the trial as its intermediate value at step =
  epoch (what optuna-dashboard plots and a pruner reads): the declared `objective` (e.g.
  valid_nll). A trial failed meanwhile as stale is left alone, as in `record`."""
  try:
    trial.report(line[objective], line["epoch"])
  except optuna.exceptions.UpdateFinishedTrialError:
    pass


def record(trial: optuna.Trial, study: optuna.Study, result: dict, attrs: dict,
           objective: str) -> None:
  """Stores a train_and_evaluate result on the trial and finishes it with the result's
  `objective` (the declaration's), unless the trial was failed meanwhile as stale (a heartbeat
  late by more than the grace period): then its retry records the result."""
  try:
    for key, value in {**attrs, **result}.items():
      trial.set_user_attr(key, value)
  except optuna.exceptions.UpdateFinishedTrialError:
    print(f"trial {trial.number} was retried elsewhere (its heartbeat stopped); not recorded",
          flush=True)
    return
  if result["status"] == "diverged":
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
  else:
    study.tell(trial, result[objective])


def record_error(trial: optuna.Trial, study: optuna.Study, error: str, traceback: str,
                 max_retries: int) -> None:
  """Fails a trial that raised `error` ("<type>: <message>", with its `traceback`), recording
  both, and retries it unless it has had `max_retries` retries (see `record` for a trial
  failed meanwhile as stale)."""
  try:
    for key, value in {"status": "failed", "error": error,
                       "traceback": traceback[-TRACEBACK_CHARS:]}.items():
      trial.set_user_attr(key, value)
  except optuna.exceptions.UpdateFinishedTrialError:
    print(f"trial {trial.number} was retried elsewhere (its heartbeat stopped); its error is not "
          "recorded", flush=True)
    return
  frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
  _enqueue_retry(study, frozen, max_retries)
