"""One sweep worker: pulls trials from the sweep's studies until each variant has its quota,
training each in its own workdir (`trials/<variant>/<number>`) under the sweep directory, and
`config.pack_size` trials of one variant and hidden size at a time as one compiled program."""
import importlib.util
import pathlib

import ml_collections
from absl import logging

from launch import study as studies

LOCK_FILE = ".claim.lock"


def load_study_module(path: str):
  """The experiment file (e.g. experiments/odyssey.py) as a module."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_worker(sweep_dir: str, storage_url: str, study_file: str, config: dict,
               index: int = 0) -> int:
  """Runs trials until none are left; returns how many this worker trained."""
  from rnn_research.train import DATASETS, train_pack  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  module = load_study_module(study_file)
  config = ml_collections.ConfigDict(config)
  storage = studies.open_storage(storage_url)
  sweep_dir = pathlib.Path(sweep_dir)
  variants = list(config.variants)
  variants = variants[index % len(variants):] + variants[:index % len(variants)]  # spread out
  space = module.search_space()
  trained = 0
  for variant in variants:
    study = studies.open_study(storage, config.name, variant)
    while trials := studies.claim_trials(study, config.trials_per_variant, space,
                                         sweep_dir / LOCK_FILE, config.pack_size,
                                         module.PACK_SHARED_PARAMS):
      workdirs, trial_configs = [], []
      for trial in trials:
        # A retried trial keeps its workdir and seed, and so resumes from its checkpoint.
        workdir = trial.user_attrs.get("workdir",
                                       f"{studies.TRIALS_DIR}/{variant}/{trial.number:04d}")
        seed = trial.user_attrs.get("seed", trial.number)
        trial.set_user_attr("workdir", workdir)
        trial.set_user_attr("seed", seed)
        workdirs.append(sweep_dir / workdir)
        trial_configs.append(module.trial_config(config, variant, trial.params, seed=seed))
        print(f"worker {index}: {variant} trial {trial.number} {trial.params}", flush=True)
      results = train_pack(trial_configs, workdirs)
      for trial, workdir, trial_config, result in zip(trials, workdirs, trial_configs, results):
        studies.record(trial, study, result, {
            "variant": variant, "workdir": str(workdir.relative_to(sweep_dir)),
            "data": DATASETS[trial_config.data][0]})
      trained += len(trials)
  return trained
