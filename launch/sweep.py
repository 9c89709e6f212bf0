"""What every launcher does before its workers start: check the study, bind its config to the
sweep directory, open the variants' studies and build the data."""
import dataclasses
import pathlib

from launch import study as studies
from rnn_research import provenance, tasks
from rnn_research.database import given_url, masked
from rnn_research.experiment import load_module
from rnn_research.workdir import bind_config


@dataclasses.dataclass
class Sweep:
  dir: pathlib.Path
  study_file: str          # absolute path of the experiment file
  module: object           # the experiment file as a module
  url: str                 # the study database
  storage: object
  studies: list            # one Optuna study per variant


def default_sweep_dir(config_argument: str) -> str:
  path, _, arg = config_argument.partition(":")
  return f"sweeps/{pathlib.Path(path).stem}" + (f"-{arg}" if arg else "")


def check_config(config, module) -> None:
  """Refuses an unknown variant or an empty search space before any trial starts. Variants are
  LSTM presets unless the study module has its own `check_variant(name)`."""
  from rnn_research.cells import lstm_spec  # pylint: disable=g-import-not-at-top
  for variant in config.variants:
    getattr(module, "check_variant", lstm_spec)(variant)
  if not module.search_space():
    raise ValueError("the study's search_space() is empty: nothing to sample")
  if config.trials_per_variant < 1:
    raise ValueError(f"trials_per_variant must be >= 1, got {config.trials_per_variant}")


def prepare_data(config, module) -> None:
  """Builds the sweep's data once, before the workers start (they would race to build it): the
  study module's `prepare_data(config)` if it has one, else the next-step dataset it names."""
  if hasattr(module, "prepare_data"):
    module.prepare_data(config)
    return
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks.next_step import DATASETS  # pylint: disable=g-import-not-at-top
  data.builder(DATASETS[config.trial.data][0], data_dir=config.trial.data_dir or None,
               path=config.trial.data_path or None)


def count_done(variant_studies) -> int:
  return sum(studies.is_done(t) for study in variant_studies
             for t in study.get_trials(deepcopy=False))


def complete_record(record: dict) -> dict:
  """A sweep record (sweep.json) with the keys declared since it was written given their
  defaults: the sampler's seed, and the trial config's (tasks.complete_record)."""
  config = {**record["config"], "seed": studies.sampler_seed(record["config"])}
  if "trial" in config:
    config["trial"] = tasks.complete_record(config["trial"])
  return {**record, "config": config}


def prepare(config, config_argument: str, sweep_dir: str | None, storage: str | None,
            overwrite: bool) -> Sweep:
  """The sweep of `config` (from `--study=<config_argument>`) in `sweep_dir` (default
  sweeps/<study>[-<arg>]) with its studies in `storage` (default $RNN_RESEARCH_STORAGE, else
  SQLite in the sweep dir).
  Bad input (an unknown variant, an unreachable database, a sweep dir of another config)
  raises a ValueError before the sweep dir is written, when it can be told before."""
  study_file = str(pathlib.Path(config_argument.partition(":")[0]).absolute())
  storage = given_url(storage)
  module = load_module(study_file)
  check_config(config, module)
  opened = studies.open_storage(storage) if storage else None
  sweep_dir = pathlib.Path(sweep_dir or default_sweep_dir(config_argument))
  record = complete_record({"study": study_file, "config": config.to_dict()})
  bind_config(sweep_dir, "sweep.json", record, overwrite, kind="a sweep",
              remedy="pass --overwrite to delete it, or choose another --sweep_dir",
              normalise=complete_record)
  url = studies.storage_url(sweep_dir, storage)
  # The launcher leaves JAX's devices to its workers: each trial's env.json names them.
  provenance.record(sweep_dir, record, devices=False, storage=masked(url),
                    study_git=provenance.git_state(pathlib.Path(study_file).parent))
  opened = opened or studies.open_storage(url)
  variant_studies = [studies.open_study(opened, config.name, v) for v in config.variants]
  prepare_data(config, module)
  return Sweep(sweep_dir, study_file, module, url, opened, variant_studies)
