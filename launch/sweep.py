"""What every launcher does before its workers start: check the study, bind its config to the
sweep directory, open the variants' studies and build the data."""
import dataclasses
import pathlib

from launch import study as studies
from rnn_research import declaration, tasks
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
  """Refuses, before any trial starts, a study config whose declaration does not hold (see
  rnn_research.declaration), a variant it does not declare (or its module does not accept),
  a trial key its variants or space set that the trial config lacks, or a report section the
  report does not know."""
  from rnn_research.analysis import report  # pylint: disable=g-import-not-at-top
  study = declaration.of(config)
  declaration.check_variants(module, config)
  report.check_sections(study.report)
  if config.trials_per_variant < 1:
    raise ValueError(f"trials_per_variant must be >= 1, got {config.trials_per_variant}")
  if not hasattr(module, "trial_config"):
    params = {name: p.choices[0] if p.scale == "categorical" else p.low
              for name, p in study.space.items()}
    for variant in config.variants:
      study.trial_config(config, variant, params, seed=0)


def prepare_data(config, module) -> None:
  """Builds the sweep's data once, before the workers start (they would race to build it): the
  study module's `prepare_data(config)` if it has one, else the next-step dataset it names
  (the other tasks make their data in the trial)."""
  if hasattr(module, "prepare_data"):
    module.prepare_data(config)
    return
  if config.trial.task != "next_step":
    return
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks.next_step import DATASETS  # pylint: disable=g-import-not-at-top
  data.builder(DATASETS[config.trial.data][0], data_dir=config.trial.data_dir or None,
               path=config.trial.data_path or None)


def count_done(variant_studies) -> int:
  return sum(studies.is_done(t) for study in variant_studies
             for t in study.get_trials(deepcopy=False))


def complete_record(record: dict) -> dict:
  """A stored sweep record in the current form: the declaration of a built-in study's sweep
  written before studies declared themselves (declaration.complete_sweep_record), and its
  trial config completed (tasks.complete_record)."""
  record = declaration.complete_sweep_record(record)
  config = record["config"]
  if "trial" not in config:
    return record
  return {**record, "config": {**config, "trial": tasks.complete_record(config["trial"])}}


def prepare(config, config_argument: str, sweep_dir: str | None, storage: str | None,
            overwrite: bool) -> Sweep:
  """The sweep of `config` (from `--study=<config_argument>`) in `sweep_dir` (default
  sweeps/<study>[-<arg>]) with its studies in `storage` (default SQLite in the sweep dir).
  Bad input (an unknown variant, an unreachable database, a sweep dir of another config)
  raises a ValueError before the sweep dir is written, when it can be told before."""
  study_file = str(pathlib.Path(config_argument.partition(":")[0]).absolute())
  module = load_module(study_file)
  check_config(config, module)
  opened = studies.open_storage(storage) if storage else None
  sweep_dir = pathlib.Path(sweep_dir or default_sweep_dir(config_argument))
  bind_config(sweep_dir, "sweep.json", {"study": study_file, "config": config.to_dict()},
              overwrite, kind="a sweep",
              remedy="pass --overwrite to delete it, or choose another --sweep_dir",
              normalise=complete_record)
  url = studies.storage_url(sweep_dir, storage)
  opened = opened or studies.open_storage(url)
  study = declaration.of(config)
  variant_studies = [studies.open_study(opened, study, v) for v in config.variants]
  prepare_data(config, module)
  return Sweep(sweep_dir, study_file, module, url, opened, variant_studies)
