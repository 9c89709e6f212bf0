"""A sweep as Optuna studies: one study per variant, named "<name>/<variant>", in one storage
(an SQLite file in the sweep directory by default, or any database URL Optuna accepts).

Trial records (what the report reads, see rnn_research/analysis):
  completed: state COMPLETE, value = the declared metric at the best validation epoch
             (valid_<metric>), user_attrs status="completed", the result's valid_* and test_*
             metrics, best_epoch, num_params, baseline_nll, variant, data, workdir
  diverged:  state FAIL, user_attrs status="diverged", diverged_step (and the rest but NLLs)
  interrupted (a worker was killed): state FAIL without status, and an enqueued retry with the
             same params and workdir, which resumes from the trial's checkpoint. A launcher
             retries the RUNNING trials it finds at start (`requeue_interrupted`); workers that
             share a study with live workers (SLURM, several hosts) send heartbeats instead,
             and retry the trials whose heartbeat stopped (`open_storage(url, heartbeat=...)`).

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

from rnn_research.filelock import file_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study opened

DB_FILE = "study.db"
TRIALS_DIR = "trials"
# SQL of a named lock held by a connection: (lock, unlock) per SQLAlchemy dialect.
DATABASE_LOCKS = {
    "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
    "mysql": ("SELECT GET_LOCK(:name, -1)", "SELECT RELEASE_LOCK(:name)"),
}


def storage_url(sweep_dir, storage: str | None = None) -> str:
  return storage or f"sqlite:///{pathlib.Path(sweep_dir).absolute() / DB_FILE}"


def open_storage(url: str, heartbeat: int | None = None) -> optuna.storages.BaseStorage:
  """The storage at `url`, or a ValueError that names it when it cannot be reached. With a
  `heartbeat` (seconds), a RUNNING trial whose heartbeat is older than 3 heartbeats is stale:
  `claim_trials` fails it and enqueues its retry."""
  options = {} if heartbeat is None else dict(
      heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
      heartbeat_stale_trial_callback=_enqueue_retry)
  try:
    with _quiet():
      return optuna.storages.RDBStorage(url, **options)
  except Exception as error:  # SQLAlchemy raises many kinds; all mean the same to a user here
    raise ValueError(f"cannot open the study database {url!r}: {error}") from error


@contextlib.contextmanager
def _quiet():
  """Silences Optuna's warnings that heartbeats are experimental and meant for optimize()."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    yield


def open_study(storage, study, variant: str) -> optuna.Study:
  """The Optuna study of `variant` of the declared `study` (rnn_research.declaration.Study)."""
  return optuna.create_study(storage=storage, study_name=study.study_name(variant),
                             direction=study.direction, sampler=optuna.samplers.RandomSampler(),
                             load_if_exists=True)


def is_done(trial: optuna.trial.FrozenTrial) -> bool:
  """Finished for good: completed, or failed as diverged (an interrupted trial is retried)."""
  state = optuna.trial.TrialState
  return trial.state == state.COMPLETE or (trial.state == state.FAIL and
                                           trial.user_attrs.get("status") == "diverged")


def requeue_interrupted(study: optuna.Study) -> int:
  """Fails every RUNNING trial (its worker is gone: call this before starting workers) and
  enqueues it again with the same params and workdir. Returns how many."""
  running = running_trials(study)
  for trial in running:
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    _enqueue_retry(study, trial)
  return len(running)


def _enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
  """Enqueues `trial` (failed, interrupted) again with its params, workdir and seed."""
  attrs = {key: trial.user_attrs[key] for key in ("workdir", "seed") if key in trial.user_attrs}
  study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": trial.number})


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
                     f"machine), got {engine.dialect.name} in {url!r}")
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
                 shared: tuple[str, ...] = ()) -> list[optuna.Trial]:
  """Up to `size` trials to train together (an enqueued retry first), fewer when the study is
  near `target` trials done or taken, none when it has them all. Trials after the first are
  sampled with the first one's values of the `shared` params (e.g. the hidden size of a pack).
  Holds `lock` (see `claim_lock`) throughout; first retries the stale trials of dead workers,
  and starts the heartbeats of the claimed trials when the storage has heartbeats."""
  with lock, _quiet():
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
    taken = sum(is_done(t) or t.state == optuna.trial.TrialState.RUNNING for t in trials)
    if not waiting and taken >= target:
      return []
    claimed = [study.ask(distributions)]
    while len(claimed) < size and waiting <= 1 and taken + len(claimed) < target:
      study.enqueue_trial({name: claimed[0].params[name] for name in shared})
      claimed.append(study.ask(distributions))
    storage = study._storage  # pylint: disable=protected-access
    if storage.get_heartbeat_interval() is not None:
      for trial in claimed:
        storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access
    return claimed


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


def record(trial: optuna.Trial, study: optuna.Study, result: dict, attrs: dict,
           objective: str = "valid_nll") -> None:
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
