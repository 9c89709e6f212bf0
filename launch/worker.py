"""One sweep worker: pulls trials from the sweep's studies until each variant has its quota,
training each in its own workdir (`trials/<variant>/<number>`) under the sweep directory, and
`config.pack_size` trials of one variant and hidden size at a time as one compiled program.

The processes of one JAX program (`rnn_research.parallel.initialize`: hosts of a TPU slice, or
the tasks of a multi-node SLURM job) are one worker: process 0 claims and records the trials,
every process trains them (data parallel over all their devices).

A pack that raises (in its trial config or in training) fails its trials, each recording the
error on the trial and the traceback in its workdir's error.txt, and the worker goes on; the
study retries each up to `config.max_retries` times (launch/study.py)."""
import contextlib
import datetime
import pathlib
import socket
import sys
import time
import traceback

import ml_collections
from absl import logging

from launch import progress
from launch import study as studies
from rnn_research import declaration
from rnn_research.experiment import load_module
from rnn_research.workdir import write_at_once


def run_worker(sweep_dir: str, storage_url: str, study_file: str, config: dict,
               index: int = 0, heartbeat: int | None = None, show_progress: bool = True) -> int:
  """Runs trials until none are left; returns how many this worker trained. With a `heartbeat`
  (seconds: workers on several machines), the trials in training send heartbeats, and a
  worker with no trial left to claim waits while other workers' trials run, to retry those
  whose heartbeat stops. Refuses, before claiming any, a batch size the devices cannot split.
  Each epoch's declared objective (e.g. valid_nll) is reported to its Optuna trial. The worker
  logs a line per trial it starts and finishes, and its trainings a bar or a line per epoch;
  with `show_progress` False (the launcher shows all its workers' progress), nothing."""
  # pylint: disable=g-import-not-at-top
  import jax
  from rnn_research import parallel
  from rnn_research.tasks.next_step import DATASETS
  from rnn_research.train import train_pack
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  module = load_module(study_file)
  config = ml_collections.ConfigDict(config)
  parallel.check_batch(config.trial.batch_size, jax.device_count(), config.pack_size,
                       jax.process_count())
  sweep_dir = pathlib.Path(sweep_dir)
  claimer = None
  if jax.process_index() == 0:
    storage = studies.open_storage(storage_url, heartbeat, config.max_retries)
    variants = list(config.variants)
    variants = variants[index % len(variants):] + variants[:index % len(variants)]  # spread out
    claimer = _Claimer(storage_url, storage, sweep_dir, config, variants)
  trained = 0
  while True:
    claim = claimer.next() if claimer else None
    pack = parallel.broadcast_json(claim and claim.spec)
    if pack is None:
      return trained
    variant = pack["variant"]
    workdirs = [sweep_dir / t["workdir"] for t in pack["trials"]]
    if show_progress:
      for t in pack["trials"]:
        print(f"worker {index}: {variant} trial {t['number']} {t['params']}", flush=True)
    try:
      configs = [declaration.trial_config(module, config, variant, t["params"], t["seed"])
                 for t in pack["trials"]]
      with claim.heartbeats() if claim else contextlib.nullcontext():
        results = train_pack(configs, workdirs, show_progress=show_progress,
                             on_epoch=claim.report if claim else None)
    except Exception as error:  # pylint: disable=broad-except  (a trial's, not the sweep's)
      if claimer:
        _record_error(claim, workdirs, error, config.max_retries, index)
      continue
    if show_progress:
      for t, result in zip(pack["trials"], results):
        print(f"worker {index}: {progress.trial_line(variant, t['number'], result)}", flush=True)
    if claimer:
      for trial, workdir, trial_config, result in zip(claim.trials, workdirs, configs, results):
        studies.record(trial, claim.study, result, {
            "variant": variant, "workdir": str(workdir.relative_to(sweep_dir)),
            "data": DATASETS.get(trial_config.data, (trial_config.data,))[0]
        }, claimer.study.objective)
    trained += len(workdirs)


def _record_error(claim, workdirs, error: Exception, max_retries: int, index: int) -> None:
  """Fails the claimed trials that raised `error`: the error on each trial (see
  launch/study.record_error), its traceback appended to each workdir's error.txt."""
  text = "".join(traceback.format_exception(error))
  summary = "".join(traceback.format_exception_only(error)).strip()
  numbers = [trial.number for trial in claim.trials]
  print(f"worker {index}: {claim.variant} trials {numbers} failed:\n{text}", file=sys.stderr,
        flush=True)
  for trial, workdir in zip(claim.trials, workdirs):
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / studies.ERROR_FILE
    header = (f"{claim.study.study_name} trial {trial.number} (retries "
              f"{trial.user_attrs.get('retries', 0)}) on {socket.gethostname()} at "
              f"{datetime.datetime.now().isoformat(timespec='seconds')}:\n")
    write_at_once(log, (log.read_text() if log.exists() else "") + header + text)
    studies.record_error(trial, claim.study, summary, text, max_retries)


class _Claim:
  """Trials claimed from one variant's study; `spec` is what every process needs (JSON)."""

  def __init__(self, storage, variant: str, study, trials, objective: str):
    self.storage, self.variant, self.study, self.trials = storage, variant, study, trials
    self._objective = objective  # what `report` reports: the declaration's
    specs = []
    for trial in trials:
      # A retried trial keeps its workdir, seed and pack (named by its first trial's workdir,
      # which holds the pack's checkpoint), and so resumes from that checkpoint.
      workdir = trial.user_attrs.get("workdir",
                                     f"{studies.TRIALS_DIR}/{variant}/{trial.number:04d}")
      seed = trial.user_attrs.get("seed", trial.number)
      trial.set_user_attr("workdir", workdir)
      trial.set_user_attr("seed", seed)
      trial.set_user_attr("pack", trials[0].user_attrs["workdir"])
      specs.append({"number": trial.number, "params": trial.params, "workdir": workdir,
                    "seed": seed})
    self.spec = {"variant": variant, "trials": specs}

  def heartbeats(self):
    return studies.heartbeats(self.storage, self.trials)

  def report(self, k: int, line: dict) -> None:
    """Reports the k-th trial's epoch (a metrics.jsonl line) to its Optuna trial."""
    studies.report(self.trials[k], self._objective, line)


class _Claimer:
  """Claims the next pack of trials of the sweep's variants (the first variant first)."""

  def __init__(self, storage_url: str, storage, sweep_dir, config, variants):
    self.storage, self._url, self._sweep_dir = storage, storage_url, sweep_dir
    self._config, self.study = config, declaration.of(config)
    self._studies = {v: studies.open_study(storage, self.study, v, studies.sampler_seed(config))
                     for v in variants}
    self._space = self.study.distributions()
    if storage.get_heartbeat_interval():
      for study in self._studies.values():
        studies.adopt_running(storage, study)

  def next(self) -> _Claim | None:
    """The next claim; None when every variant has its trials done or taken by live workers."""
    waiting_for = list(self._studies)
    while waiting_for:
      for variant in waiting_for:
        study = self._studies[variant]
        trials = studies.claim_trials(
            study, self._config.trials_per_variant, self._space,
            studies.claim_lock(self._url, self._sweep_dir, study.study_name),
            self._config.pack_size, self.study.pack_shared,
            max_retries=self._config.max_retries)
        if trials:
          return _Claim(self.storage, variant, study, trials, self.study.objective)
      interval = self.storage.get_heartbeat_interval()
      waiting_for = [v for v in waiting_for
                     if interval and studies.running_trials(self._studies[v])]
      if waiting_for:
        time.sleep(interval)
    return None
