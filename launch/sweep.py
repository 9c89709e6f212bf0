"""What every launcher does before its workers start: check the study and the command's input
without writing anything (`check`), then build the data, bind the config to the sweep
directory and open the variants' studies (`prepare`)."""
import collections
import dataclasses
import functools
import pathlib

from launch import study as studies
from rnn_research import declaration, provenance, tasks
from rnn_research.database import given_url, masked
from rnn_research.experiment import load_module
from rnn_research.workdir import bind_config, check_binding


SWEEP_FILE = "sweep.json"
# The keys of every study config that the launchers read.
STUDY_KEYS = ("study", "variants", "trials_per_variant", "pack_size", "seed", "max_retries",
              "trial")


@dataclasses.dataclass
class Plan:
  """A sweep checked and not yet made (`check`)."""
  config: object           # the study config (ConfigDict)
  study_file: str          # absolute path of the experiment file
  module: object           # the experiment file as a module
  dir: pathlib.Path
  url: str                 # the study database
  replace: bool            # the sweep dir holds another config, which --overwrite deletes


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
  """Refuses, naming the key and what it takes, a config whose trials could not run: a missing
  key of STUDY_KEYS, a declaration that does not hold (see rnn_research.declaration), a variant
  it does not declare (or its module does not accept), a report section the report does not
  know, a count out of range, a trial config whose task, data, data file, backbone
  (`tasks.check`) or optimizer is wrong, and a trial key the variants or space set that the
  trial config lacks."""
  from rnn_research import train  # pylint: disable=g-import-not-at-top
  from rnn_research.analysis import report  # pylint: disable=g-import-not-at-top
  missing = [key for key in STUDY_KEYS if key not in config]
  if missing:
    raise ValueError(f"the study config lacks {missing}: a study's get_config() returns "
                     f"Study(...).config(trial, ...) (see rnn_research.declaration)")
  study = declaration.of(config)
  declaration.check_variants(module, config)
  report.check_sections(study.report)
  for key, low in (("trials_per_variant", 1), ("pack_size", 1), ("max_retries", 0)):
    if not isinstance(config[key], int) or config[key] < low:
      raise ValueError(f"{key} must be an int >= {low}, got {config[key]!r}")
  tasks.check(config.trial)
  train.make_optimizer(config.trial)
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


def count_done(variant_studies, max_retries: int) -> int:
  return sum(studies.is_done(t, max_retries) for study in variant_studies
             for t in study.get_trials(deepcopy=False))


def outcomes(variant_studies, max_retries: int) -> collections.Counter:
  """The sweep's trials finished for good, counted by how they ended (`studies.outcome`)."""
  return collections.Counter(studies.outcome(t) for study in variant_studies
                             for t in study.get_trials(deepcopy=False)
                             if studies.is_done(t, max_retries))


def describe_outcomes(counts: collections.Counter, total: int, sweep_dir) -> str:
  """`outcomes` as lines for the user: how many trials ended each way, failures by error."""
  failed = {what: n for what, n in counts.items() if what not in ("completed", "diverged")}
  lines = [f"{sum(counts.values())}/{total} trials done in {sweep_dir}: {counts['completed']} "
           f"completed, {counts['diverged']} diverged, {sum(failed.values())} failed"]
  lines += [f"  {n} {what}" for what, n in sorted(failed.items(), key=lambda item: -item[1])]
  if failed:
    lines.append(f"  tracebacks: {sweep_dir}/{studies.TRIALS_DIR}/<variant>/<trial>/"
                 f"{studies.ERROR_FILE}")
  return "\n".join(lines)


def complete_record(record: dict, config) -> dict:
  """A stored sweep record (sweep.json) completed to compare with one of `config` written now:
  a built-in study's sweep written before studies declared themselves gets its declaration
  (declaration.complete_sweep_record), its trial config is completed by
  tasks.complete_record, and the study config's keys declared since it was written (absent
  from it, e.g. max_retries) take their values in `config`."""
  record = declaration.complete_sweep_record(record)
  stored = {**config.to_dict(), **record["config"]}
  if "trial" in stored:
    stored["trial"] = tasks.complete_record(stored["trial"])
  return {**record, "config": stored}


def _binding(config) -> dict:
  """How `bind_config` compares a sweep dir's stored config with `config` (`complete_record`),
  and names a sweep dir of another config."""
  return dict(kind="a sweep", normalise=functools.partial(complete_record, config=config),
              remedy="pass --overwrite to delete it, or choose another --sweep_dir")


def check(config, config_argument: str, sweep_dir: str | None, storage: str | None,
          overwrite: bool) -> Plan:
  """The sweep of `config` (from `--study=<config_argument>`) in `sweep_dir` (default
  sweeps/<study>[-<arg>]) with its studies in `storage` (default $RNN_RESEARCH_STORAGE, else
  SQLite in the sweep dir), checked without writing anything: bad input (see `check_config`,
  an unreachable database, a sweep dir of another config without `overwrite`) raises a
  ValueError that names it."""
  study_file = str(pathlib.Path(config_argument.partition(":")[0]).absolute())
  storage = given_url(storage)
  module = load_module(study_file)
  check_config(config, module)
  if storage:
    studies.check_storage(storage)
  sweep_dir = pathlib.Path(sweep_dir or default_sweep_dir(config_argument))
  replace = check_binding(sweep_dir, SWEEP_FILE, {"study": study_file, "config": config.to_dict()},
                          overwrite, **_binding(config))
  return Plan(config, study_file, module, sweep_dir, studies.storage_url(sweep_dir, storage),
              replace)


def prepare(plan: Plan) -> Sweep:
  """The sweep that `check` planned, made: its data built (before the sweep dir is written, so
  a data file that cannot be read leaves nothing behind), its config bound to the sweep dir and
  its studies opened."""
  prepare_data(plan.config, plan.module)
  record = {"study": plan.study_file, "config": plan.config.to_dict()}
  bind_config(plan.dir, SWEEP_FILE, record, plan.replace, **_binding(plan.config))
  # The launcher leaves JAX's devices to its workers: each trial's env.json names them.
  provenance.record(plan.dir, record, devices=False, storage=masked(plan.url),
                    study_git=provenance.git_state(pathlib.Path(plan.study_file).parent))
  opened = studies.open_storage(plan.url)
  study = declaration.of(plan.config)
  variant_studies = [studies.open_study(opened, study, v, studies.sampler_seed(plan.config))
                     for v in plan.config.variants]
  return Sweep(plan.dir, plan.study_file, plan.module, plan.url, opened, variant_studies)


def describe_plan(plan: Plan, workers: int) -> str:
  """What a sweep of `plan` would do, for --dry_run."""
  config, study = plan.config, declaration.of(plan.config)
  variants = list(config.variants)
  state = ("holds another config: deleted (--overwrite)" if plan.replace else
           "exists: the sweep resumes" if (plan.dir / SWEEP_FILE).exists() else "new")
  return "\n".join([
      f"study:     {plan.study_file}",
      f"sweep dir: {plan.dir} ({state})",
      f"database:  {masked(plan.url)}",
      f"studies:   {', '.join(study.study_name(v) for v in variants)}",
      f"trials:    {len(variants)} variants x {config.trials_per_variant} = "
      f"{len(variants) * config.trials_per_variant}, trained in packs of {config.pack_size}; a "
      f"trial that fails is retried at most {config.max_retries} times",
      f"workers:   {workers}",
      f"config:\n{config}"])
