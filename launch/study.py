"""A sweep as Optuna studies: one study per variant, named "<name>/<variant>", in one storage
(an SQLite file in the sweep directory by default, or any database URL Optuna accepts).

Trial records (what the report reads, see rnn_research/analysis):
  completed: state COMPLETE, value = best validation NLL, user_attrs status="completed",
             test_nll, valid_nll, best_epoch, num_params, baseline_nll, variant, data, workdir
  diverged:  state FAIL, user_attrs status="diverged", diverged_step (and the rest but NLLs)
  interrupted (a worker was killed): state FAIL without status, and an enqueued retry with the
             same params and workdir, which resumes from the trial's checkpoint.
"""
import contextlib
import fcntl
import pathlib

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study opened

DB_FILE = "study.db"
TRIALS_DIR = "trials"


def storage_url(sweep_dir, storage: str | None = None) -> str:
  return storage or f"sqlite:///{pathlib.Path(sweep_dir).absolute() / DB_FILE}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
  """The storage at `url`, or a ValueError that names it when it cannot be reached."""
  try:
    return optuna.storages.RDBStorage(url)
  except Exception as error:  # SQLAlchemy raises many kinds; all mean the same to a user here
    raise ValueError(f"cannot open the study database {url!r}: {error}") from error


def open_study(storage, name: str, variant: str) -> optuna.Study:
  return optuna.create_study(storage=storage, study_name=f"{name}/{variant}", direction="minimize",
                             sampler=optuna.samplers.RandomSampler(), load_if_exists=True)


def is_done(trial: optuna.trial.FrozenTrial) -> bool:
  """Finished for good: completed, or failed as diverged (an interrupted trial is retried)."""
  state = optuna.trial.TrialState
  return trial.state == state.COMPLETE or (trial.state == state.FAIL and
                                           trial.user_attrs.get("status") == "diverged")


def requeue_interrupted(study: optuna.Study) -> int:
  """Fails every RUNNING trial (its worker is gone: call this before starting workers) and
  enqueues it again with the same params and workdir. Returns how many."""
  running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
  for trial in running:
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={"workdir": trial.user_attrs["workdir"],
                                                  "seed": trial.user_attrs["seed"],
                                                  "retry_of": trial.number})
  return len(running)


@contextlib.contextmanager
def file_lock(path):
  """An exclusive lock between the processes of one machine."""
  with open(path, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def claim_trials(study: optuna.Study, target: int, distributions, lock_path, size: int = 1,
                 shared: tuple[str, ...] = ()) -> list[optuna.Trial]:
  """Up to `size` trials to train together (an enqueued retry first), fewer when the study is
  near `target` trials done or taken, none when it has them all. Trials after the first are
  sampled with the first one's values of the `shared` params (e.g. the hidden size of a pack)."""
  with file_lock(lock_path):
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
    taken = sum(is_done(t) or t.state == optuna.trial.TrialState.RUNNING for t in trials)
    if not waiting and taken >= target:
      return []
    claimed = [study.ask(distributions)]
    while len(claimed) < size and waiting <= 1 and taken + len(claimed) < target:
      study.enqueue_trial({name: claimed[0].params[name] for name in shared})
      claimed.append(study.ask(distributions))
    return claimed


def record(trial: optuna.Trial, study: optuna.Study, result: dict, attrs: dict) -> None:
  """Stores a train_and_evaluate result on the trial and finishes it."""
  for key, value in {**attrs, **result}.items():
    trial.set_user_attr(key, value)
  if result["status"] == "diverged":
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
  else:
    study.tell(trial, result["valid_nll"])
