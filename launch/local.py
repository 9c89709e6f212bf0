"""Runs a sweep on this machine: N worker processes pull trials from the sweep's Optuna studies;
at the end the report is written.

    python -m launch.local --study=experiments/odyssey.py:smoke --workers=2
    python -m launch.local --study=experiments/odyssey.py --workers=8 --config.data=standard \
        --config.data_path=../shared/data/JSB_Chorales.mat --sweep_dir=sweeps/odyssey-standard

The sweep directory (default sweeps/<study file>[-<arg>]) holds sweep.json (the study config),
study.db and trials/. Running the same command again after a kill (of the launcher alone too:
its workers end with it) resumes: interrupted trials restart from their checkpoints and
finished ones are kept. A different config in an existing
sweep directory is refused (naming the differing keys) unless --overwrite. Bad input (a study
file, config key, variant, data set or data file that does not exist, an unreachable database)
is refused in one line before anything is written; --dry_run checks, prints the plan and an
estimate of the run time (measured: one epoch of one pack), and writes nothing in the sweep
dir. A trial that raises is recorded as failed with its error, and retried up to the config's
max_retries times; a sweep in which no trial completes ends with an error and no report.

While it runs it shows one bar of the trials done and a line per finished trial (the workers
print nothing of their own, see launch/progress.py); the learning curves are live in
`tensorboard --logdir <sweep dir>/trials` and `optuna-dashboard sqlite:///<sweep dir>/study.db`.
"""
import multiprocessing
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from launch import cli, cores, estimate, progress
from launch import study as studies
from launch.sweep import check, describe_outcomes, describe_plan, outcomes, prepare, prepare_data
from launch.worker import run_worker

_CONFIG = config_flags.DEFINE_config_file("config", None, "The study: experiments/<study>.py[:arg].")
flags.DEFINE_alias("study", "config")
_WORKERS = flags.DEFINE_integer("workers", None, "Worker processes (default: one per core, "
                                "each single-threaded; see launch/cores.py).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Default: sweeps/<study>[-<arg>].")
_STORAGE = flags.DEFINE_string("storage", None, "Optuna database URL (default: "
                               "$RNN_RESEARCH_STORAGE, else SQLite in the sweep dir).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete a sweep dir written by another config.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check, print the plan and a run-time estimate "
                             "(measured: one epoch of one pack); write nothing in the sweep dir.")


def _worker(launcher: int, *args, **kwargs) -> int:
  """A worker process of this launcher (`run_worker`), which ends when the launcher is gone."""
  cores.exit_with_parent(launcher)
  return run_worker(*args, **kwargs)


def main(argv):
  del argv
  config = _CONFIG.value
  num_workers = _WORKERS.value or cores.default_workers()
  with cli.bad_input():
    plan = check(config, config_flags.get_config_filename(flags.FLAGS["config"]),
                 _SWEEP_DIR.value, _STORAGE.value, _OVERWRITE.value)
  if _DRY_RUN.value:
    print(describe_plan(plan, num_workers), flush=True)
    with cli.bad_input():
      prepare_data(config, plan.module)  # in the data dir, where the sweep would build it
    print(estimate.describe(estimate.measure(plan.study_file, config, num_workers), config,
                            num_workers))
    return
  with cli.bad_input():
    sweep = prepare(plan)
  sweep_dir, variant_studies = sweep.dir, sweep.studies
  requeued = sum(studies.requeue_interrupted(study, config.max_retries)
                 for study in variant_studies)
  if requeued:
    logging.info("resuming %d interrupted trials from their checkpoints", requeued)
  total = len(config.variants) * config.trials_per_variant
  environment = cores.worker_environment(num_workers, str(sweep_dir.absolute() / "jax_cache"))
  logging.info("%d worker processes on %d cores%s; XLA_FLAGS=%r, compilation cache %s",
               num_workers, len(cores.available_cores()),
               " (each pinned to one)" if num_workers == len(cores.available_cores()) else "",
               environment["XLA_FLAGS"], environment["JAX_COMPILATION_CACHE_DIR"])
  context = multiprocessing.get_context("spawn")  # JAX must not be forked
  workers = [context.Process(target=_worker, args=(os.getpid(), str(sweep_dir), sweep.url,
                                                   sweep.study_file, config.to_dict(), i),
                             kwargs={"show_progress": False})  # the display below shows it
             for i in range(num_workers)]
  with cores.environment(environment):
    for i, worker in enumerate(workers):
      worker.start()
      cores.pin(worker.pid, i, num_workers)
  with progress.SweepDisplay(variant_studies, total, f"sweep {sweep_dir}",
                            config.max_retries) as display:
    running = True
    while running:
      time.sleep(2)
      running = any(w.is_alive() for w in workers)
      display.update()  # after the check, so that it shows what the last workers recorded
  failed = [i for i, w in enumerate(workers) if w.exitcode != 0]
  counts = outcomes(variant_studies, config.max_retries)
  print(describe_outcomes(counts, total, sweep_dir))
  if failed:
    raise SystemExit(f"workers {failed} failed; run the same command again to resume")
  if not counts["completed"]:
    raise SystemExit("error: no trial completed, so there is no report; the errors are above")
  from rnn_research.analysis import write_report  # pylint: disable=g-import-not-at-top
  print(f"report: {write_report(sweep_dir, storage=sweep.url)}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
