"""A study's declaration: what a sweep runs and what its report compares, as plain data.

A study module (experiments/<study>.py, or a researcher's own file) declares itself with a
`Study`: its name, its variants (each a name and the trial settings it changes, one of them the
baseline the others are tested against), the search space (a `Param` per sampled value, with the
scale it is sampled on and the trial key it sets), the metric and direction, and the data set.
`Study.config(trial, ...)` makes the module's `get_config`; the declaration lives in the config
as its `study` section, so it is overridable by flags (--config.study.baseline=NFG) and stored
in the sweep's sweep.json, which is all the launcher and the report read (`of`; a sweep.json of
a built-in study written before: `complete_sweep_record`).

    STUDY = Study(name="dropout", variants={"none": {"model.dropout": 0.0},
                                            "half": {"model.dropout": 0.5}},
                  baseline="none", space={"learning_rate": Param("log", 1e-4, 1e-2)})

    def get_config(arg=None):
      trial = train.default_config("adding", "gru")
      trial.update(data="adding", task_options=dict(length=50))
      trial.model.num_layers = 2  # dropout acts between layers
      return STUDY.config(trial, trials_per_variant=20)

A trial's config is the study's base trial config with its variant's settings and its sampled
values set (`Study.trial_config`); a module whose trials need more (a value derived from two
params, a width matched to a parameter count) defines `trial_config(config, variant, params,
seed)` itself.
"""
import dataclasses
import math
import pathlib
from typing import Any

import ml_collections

SCALES = ("log", "linear", "int", "log_int", "categorical")
DIRECTIONS = ("minimize", "maximize")
# The report's sections when a study names none (rnn_research.analysis.report.SECTIONS).
DEFAULT_REPORT = ("tests", "importance", "marginals", "curves")
# The studies of this repository that sweeps were run of before studies declared themselves.
BUILT_IN = ("odyssey", "rnn_vs_transformer")
EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@dataclasses.dataclass(frozen=True)
class Param:
  """One sampled value: `scale` "log" (log-uniform float), "linear" (uniform float), "int"
  (uniform integer), "log_int" (log-uniform integer) on [low, high], or "categorical" (one of
  `choices`). `key` is the dotted trial-config key it sets (default: its name); `label` names
  it in tables and figures (default: its name with spaces)."""
  scale: str
  low: float | None = None
  high: float | None = None
  choices: tuple = ()
  key: str | None = None
  label: str | None = None

  def __post_init__(self):
    if self.scale not in SCALES:
      raise ValueError(f"scale must be one of {list(SCALES)}, got {self.scale!r}")
    if self.scale == "categorical":
      if not self.choices or self.low is not None or self.high is not None:
        raise ValueError(f"a categorical param needs choices and no low or high, got {self}")
      object.__setattr__(self, "choices", tuple(self.choices))
      return
    if self.low is None or self.high is None or not self.low < self.high:
      raise ValueError(f"a {self.scale} param needs low < high, got low={self.low!r}, "
                       f"high={self.high!r}")
    if self.scale in ("log", "log_int") and self.low <= 0:
      raise ValueError(f"a {self.scale} param needs low > 0, got {self.low!r}")
    if self.scale in ("int", "log_int") and not (float(self.low).is_integer()
                                                 and float(self.high).is_integer()):
      raise ValueError(f"an {self.scale} param needs whole low and high, got {self.low!r}, "
                       f"{self.high!r}")

  @property
  def log(self) -> bool:
    return self.scale in ("log", "log_int")

  def distribution(self):
    """The Optuna distribution this param is sampled from."""
    import optuna  # pylint: disable=g-import-not-at-top
    dists = optuna.distributions
    if self.scale == "categorical":
      return dists.CategoricalDistribution(self.choices)
    if self.scale in ("int", "log_int"):
      return dists.IntDistribution(int(self.low), int(self.high), log=self.log)
    return dists.FloatDistribution(float(self.low), float(self.high), log=self.log)

  def axis(self, value) -> float:
    """`value` on the axis it was sampled on: log10 for the log scales, the index of a choice
    for a categorical param, else the value (what fANOVA and the marginals look at)."""
    if self.scale == "categorical":
      return float(self.choices.index(value))
    return math.log10(value) if self.log else float(value)


@dataclasses.dataclass(frozen=True)
class Study:
  """A study's declaration (see the module docstring).

  variants: name -> its trial settings, {dotted or nested trial key: value}.
  data: the data set the variants train on; None: the trial config's `data` (`config` makes
    the declaration's a reference to it, so --config.trial.data changes both).
  baseline: the variant the report tests every other against (None: a study whose report
    has no "tests" section).
  metric: the trials' result key without its split: the sampler sees `valid_<metric>` (the
    value at the best validation epoch), the report compares `test_<metric>`.
  unit: what the metric is measured in, for the report's labels ("nats per frame").
  report: the report's sections, by name (rnn_research.analysis.report.SECTIONS).
  pack_shared: the params the trials of a pack share (one compiled program needs one shape).
  """
  name: str
  variants: dict
  space: dict
  data: str | None = None
  baseline: str | None = None
  metric: str = "nll"
  direction: str = "minimize"
  unit: str = ""
  title: str = ""
  report: tuple = DEFAULT_REPORT
  pack_shared: tuple = ()

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name or "/" in self.name:
      raise ValueError(f"name must be a non-empty string without '/', got {self.name!r}")
    if not self.variants:
      raise ValueError("variants must name at least one variant, got none")
    bad = [v for v in self.variants if not isinstance(v, str) or not v or "/" in v]
    if bad:
      raise ValueError(f"variant names must be non-empty strings without '/', got {bad}")
    object.__setattr__(self, "variants", {v: nested(s or {}) for v, s in self.variants.items()})
    if self.baseline is not None and self.baseline not in self.variants:
      raise ValueError(f"baseline must be one of the variants {list(self.variants)}, got "
                       f"{self.baseline!r}")
    if not self.space:
      raise ValueError("space must declare at least one param: nothing to sample")
    space = {n: p if isinstance(p, Param) else Param(**p) for n, p in self.space.items()}
    object.__setattr__(self, "space", space)
    if self.direction not in DIRECTIONS:
      raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {self.direction!r}")
    object.__setattr__(self, "report", tuple(self.report))
    object.__setattr__(self, "pack_shared", tuple(self.pack_shared))
    unknown = sorted(set(self.pack_shared) - set(space))
    if unknown:
      raise ValueError(f"pack_shared {unknown} are not params of the space {list(space)}")
    if "tests" in self.report and self.baseline is None:
      raise ValueError("a report with the 'tests' section needs a baseline variant")

  @property
  def objective(self) -> str:
    """The result key the sampler sees: the metric at the best validation epoch."""
    return f"valid_{self.metric}"

  @property
  def test_key(self) -> str:
    """The result key the report compares."""
    return f"test_{self.metric}"

  def better(self, a: float, b: float) -> bool:
    """Whether metric value `a` is better than `b` in the declared direction."""
    return a < b if self.direction == "minimize" else a > b

  def distributions(self) -> dict:
    """{param: Optuna distribution} of the search space."""
    return {name: param.distribution() for name, param in self.space.items()}

  def study_name(self, variant: str) -> str:
    """The name of the variant's Optuna study."""
    return f"{self.name}/{variant}"

  def to_dict(self) -> dict:
    """The declaration as JSON-ready data (what sweep.json holds). Variants and params are
    lists of objects with a "name", in the declared order (a JSON object's keys are sorted)."""
    record = dataclasses.asdict(self)
    record["variants"] = [{"name": v, "settings": s} for v, s in self.variants.items()]
    record["space"] = [{"name": n, **{k: v for k, v in dataclasses.asdict(p).items()
                                      if v is not None and v != ()}}
                       for n, p in self.space.items()]
    return record

  @classmethod
  def from_dict(cls, record: dict) -> "Study":
    """The declaration of a `to_dict` record (or a config's `study` section), checked."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - known)
    if unknown:
      raise ValueError(f"study keys {unknown} are not declaration fields; they are "
                       f"{sorted(known)}")
    fields = {k: _plain(v) for k, v in record.items()}
    if isinstance(fields.get("variants"), tuple):
      fields["variants"] = {v["name"]: v.get("settings", {}) for v in fields["variants"]}
    if isinstance(fields.get("space"), tuple):
      fields["space"] = {p["name"]: {k: v for k, v in p.items() if k != "name"}
                         for p in fields["space"]}
    return cls(**fields)

  def config(self, trial, *, trials_per_variant: int, pack_size: int = 1, seed: int = 0,
             max_retries: int = 3, **fields) -> ml_collections.ConfigDict:
    """A study module's config, locked: `study` (this declaration; its data, if None, a
    reference to the trial's), `variants` (the ones a sweep runs: all by default;
    --config.variants picks some), `trials_per_variant`, `pack_size` (> 1: trials of a
    variant that share `pack_shared` train as one program), `seed` (the sampler's: a rerun of
    the sweep samples the same trials), `max_retries` (of a trial that raised or was
    interrupted; see launch/study.py), `trial` (the base trial config) and any other `fields`
    the module reads."""
    config = ml_collections.ConfigDict(dict(
        study=self.to_dict(), variants=tuple(self.variants),
        trials_per_variant=trials_per_variant, pack_size=pack_size, seed=seed,
        max_retries=max_retries, trial=trial, **fields))
    if self.data is None:
      config.study.data = config.trial.get_ref("data")
    config.lock()
    return config

  def trial_config(self, config, variant: str, params: dict,
                   seed: int) -> ml_collections.ConfigDict:
    """The locked trial config of `variant` with sampled `params` and its own `seed`:
    config.trial with the variant's settings and each param's key set. A key the trial
    config does not have is an error naming it."""
    trial = ml_collections.ConfigDict(config.trial.to_dict())
    trial.lock()
    settings = {**flatten(self.variants[variant]),
                **{p.key or n: params[n] for n, p in self.space.items()}, "seed": seed}
    for key, value in settings.items():
      try:
        trial.update_from_flattened_dict({key: value})
      except (KeyError, AttributeError, TypeError) as error:
        raise ValueError(f"study {self.name!r}: {key!r} (of variant {variant!r} or the space) "
                         f"is not a key of the trial config") from error
    return trial


def of(config) -> Study:
  """The declaration in a study config (its `study` section), checked."""
  if "study" not in config:
    raise ValueError("the config has no `study` section: a study module's get_config returns "
                     "Study(...).config(trial, ...) (see rnn_research.declaration)")
  section = config.study
  return Study.from_dict(section.to_dict() if hasattr(section, "to_dict") else section)


def trial_config(module, config, variant: str, params: dict, seed: int):
  """The trial config of one trial: the module's own `trial_config`, or the declaration's."""
  if hasattr(module, "trial_config"):
    return module.trial_config(config, variant, params, seed=seed)
  return of(config).trial_config(config, variant, params, seed)


def check_variants(module, config) -> None:
  """Refuses a variant to run that the study does not declare, unless the module accepts it
  with its own `check_variant(name)` (a study whose variant names are a grammar, such as
  `<benchmark>-<backbone>-<size>`, whose `trial_config` reads the name)."""
  declared = list(of(config).variants)
  for variant in config.variants:
    if variant in declared:
      continue
    if hasattr(module, "check_variant"):
      module.check_variant(variant)
    else:
      raise ValueError(f"variant must be one of {declared}, got {variant!r}")


def complete_sweep_record(record: dict) -> dict:
  """A stored sweep.json record ({"study": file, "config": ...}) in the current form. One
  written before studies declared themselves (no config.study) of a built-in study, recognised
  by its stored study file, gets that study's declaration (its module's `declare(config)`, from
  this repository's experiments/) in place of its config.name; any other record is returned
  as it is."""
  config = record.get("config", {})
  stem = pathlib.Path(record.get("study") or "").stem
  if "study" in config or stem not in BUILT_IN:
    return record
  from rnn_research.experiment import load_module  # pylint: disable=g-import-not-at-top
  module = load_module(str(EXPERIMENTS / f"{stem}.py"))
  study = module.declare(ml_collections.ConfigDict(config)).to_dict()
  if study["data"] is None:  # the trial's, as `Study.config` resolves it
    study["data"] = config["trial"]["data"]
  config = {k: v for k, v in config.items() if k != "name"}
  return {**record, "config": {**config, "study": study}}


def nested(settings: dict) -> dict:
  """{"model.dropout": 0.5} -> {"model": {"dropout": 0.5}} (nested keys kept as they are)."""
  out = {}
  for key, value in settings.items():
    *parents, last = key.split(".")
    node = out
    for parent in parents:
      node = node.setdefault(parent, {})
    node[last] = nested(value) if isinstance(value, dict) else value
  return out


def flatten(settings: dict, prefix: str = "") -> dict:
  """{"model": {"dropout": 0.5}} -> {"model.dropout": 0.5}."""
  out = {}
  for key, value in settings.items():
    if isinstance(value, dict) and value:
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _plain(value: Any) -> Any:
  """A ConfigDict's or JSON's value as the dataclass holds it (lists as tuples)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_plain(v) for v in value)
  return value
