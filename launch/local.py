"""Runs a sweep on this machine: N worker processes pull trials from the sweep's Optuna studies;
at the end the report is written.

    python -m launch.local --study=experiments/odyssey.py:smoke --workers=2
    python -m launch.local --study=experiments/odyssey.py --workers=8 --config.data=standard \
        --config.data_path=../shared/data/JSB_Chorales.mat --sweep_dir=sweeps/odyssey-standard

The sweep directory (default sweeps/<study file>[-<arg>]) holds sweep.json (the study config),
study.db and trials/. Running the same command again after a kill resumes: interrupted trials
restart from their checkpoints and finished ones are kept. A different config in an existing
sweep directory is refused (naming the differing keys) unless --overwrite.
"""
import multiprocessing
import pathlib
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from launch import study as studies
from launch.worker import load_study_module, run_worker
from rnn_research.workdir import bind_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "The study: experiments/<study>.py[:arg].")
flags.DEFINE_alias("study", "config")
_WORKERS = flags.DEFINE_integer("workers", 1, "Worker processes.")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Default: sweeps/<study>[-<arg>].")
_STORAGE = flags.DEFINE_string("storage", None, "Optuna database URL (default: SQLite in the sweep dir).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete a sweep dir written by another config.")


def default_sweep_dir(config_argument: str) -> str:
  path, _, arg = config_argument.partition(":")
  return f"sweeps/{pathlib.Path(path).stem}" + (f"-{arg}" if arg else "")


def check_config(config, module) -> None:
  """Refuses an unknown variant or an empty search space before any trial starts."""
  from rnn_research.cells import lstm_spec  # pylint: disable=g-import-not-at-top
  for variant in config.variants:
    lstm_spec(variant)
  if not module.search_space():
    raise ValueError("the study's search_space() is empty: nothing to sample")
  if config.trials_per_variant < 1:
    raise ValueError(f"trials_per_variant must be >= 1, got {config.trials_per_variant}")


def prepare_data(config) -> None:
  """Builds the sweep's dataset once, before the workers start (they would race to build it)."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.train import DATASETS  # pylint: disable=g-import-not-at-top
  data.builder(DATASETS[config.trial.data][0], data_dir=config.trial.data_dir or None,
               path=config.trial.data_path or None)


def count_done(variant_studies) -> int:
  return sum(studies.is_done(t) for study in variant_studies
             for t in study.get_trials(deepcopy=False))


def main(argv):
  del argv
  config = _CONFIG.value
  config_argument = config_flags.get_config_filename(flags.FLAGS["config"])
  study_file = str(pathlib.Path(config_argument.partition(":")[0]).absolute())
  module = load_study_module(study_file)
  check_config(config, module)
  sweep_dir = pathlib.Path(_SWEEP_DIR.value or default_sweep_dir(config_argument))
  bind_config(sweep_dir, "sweep.json", {"study": study_file, "config": config.to_dict()},
              _OVERWRITE.value, kind="a sweep",
              remedy="pass --overwrite to delete it, or choose another --sweep_dir")
  url = studies.storage_url(sweep_dir, _STORAGE.value)
  storage = studies.open_storage(url)
  variant_studies = [studies.open_study(storage, config.name, v) for v in config.variants]
  requeued = sum(studies.requeue_interrupted(study) for study in variant_studies)
  if requeued:
    logging.info("resuming %d interrupted trials from their checkpoints", requeued)
  prepare_data(config)
  total = len(config.variants) * config.trials_per_variant
  context = multiprocessing.get_context("spawn")  # JAX must not be forked
  workers = [context.Process(target=run_worker, args=(str(sweep_dir), url, study_file,
                                                      config.to_dict(), i))
             for i in range(_WORKERS.value)]
  for worker in workers:
    worker.start()
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  with tqdm(total=total, desc=f"sweep {sweep_dir}", disable=not sys.stderr.isatty()) as bar:
    while any(w.is_alive() for w in workers):
      time.sleep(2)
      done = count_done(variant_studies)
      bar.update(done - bar.n)
  failed = [i for i, w in enumerate(workers) if w.exitcode != 0]
  done = count_done(variant_studies)
  print(f"{done}/{total} trials done in {sweep_dir}")
  if failed:
    raise SystemExit(f"workers {failed} failed; run the same command again to resume")
  from rnn_research.analysis import write_report  # pylint: disable=g-import-not-at-top
  print(f"report: {write_report(sweep_dir, storage=_STORAGE.value)}")


if __name__ == "__main__":
  app.run(main)
