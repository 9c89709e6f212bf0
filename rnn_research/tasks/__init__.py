"""Task shapes a trial can train, by name (`config.task`). A task module registers its builder
`(config) -> Task` with `@register(name, options=..., model=..., data=...)`, declaring the
`config.task_options` it reads and the model keys its head reads (the head's CONFIG_KEYS), with
their defaults, and the data sets it reads; `make_task` imports the module of a name on first
use, checks the config (`check`) and builds the task from it completed with those defaults.
"""
import dataclasses
import importlib
import os
from typing import Callable, Iterable

import ml_collections

from rnn_research import backbones
from rnn_research.tasks.base import Task

# config.task -> the module that registers it (imported lazily: data and models are heavy).
MODULES = {
    "next_step": "rnn_research.tasks.next_step",
    "classify": "rnn_research.tasks.classify", "tag": "rnn_research.tasks.tag",
    "seq2seq": "rnn_research.tasks.seq2seq", "conditional": "rnn_research.tasks.conditional",
    "stream": "rnn_research.tasks.stream",
    "adding": "rnn_research.tasks.synthetic", "copy": "rnn_research.tasks.synthetic",
}


@dataclasses.dataclass(frozen=True)
class Registered:
  """A task's builder and the config keys it reads: `options` (config.task_options) and `model`
  (the keys of config.model its head reads besides the backbone's), with their defaults, and
  `data`, the names config.data may take (None: the task does not read it)."""
  builder: Callable
  options: dict
  model: dict
  data: tuple[str, ...] | None


TASKS: dict[str, Registered] = {}


def register(name: str, *, options: dict | None = None, model: dict | None = None,
             data: Iterable[str] | None = None):
  """Decorator: `@register("classify", options={...}, model={...}, data=(...))` makes a builder
  `(config) -> Task` known as `name`, reading the declared keys and data sets."""
  def add(builder):
    TASKS[name] = Registered(builder, dict(options or {}), dict(model or {}),
                             None if data is None else tuple(data))
    return builder
  return add


def registered(name: str) -> Registered:
  """The registration of task `name`, its module imported on first use."""
  if name not in MODULES:
    raise ValueError(f"task must be one of {sorted(MODULES)}, got {name!r}")
  importlib.import_module(MODULES[name])
  return TASKS[name]


def complete(config) -> ml_collections.ConfigDict:
  """A copy of the trial config with every key its task, head and backbone read, the defaults
  declared where they are read filling what it leaves out. A task option the task does not
  declare is an error (a misspelt key would otherwise be ignored)."""
  entry = registered(config.task)
  given = dict(config.task_options or {})
  unknown = sorted(set(given) - set(entry.options))
  if unknown:
    raise ValueError(f"task_options {unknown} are not options of task {config.task!r}; its "
                     f"options (with defaults): {entry.options}")
  completed = ml_collections.ConfigDict(config.to_dict())
  completed.task_options = {**entry.options, **given}
  completed.model = backbones.complete(config.model, entry.model)
  return completed


def complete_record(record: dict) -> dict:
  """`complete` of a trial config as stored (JSON): one written before a key was declared gets
  the key's default (its task's, head's and backbone's, or train.default_config's), so it
  compares equal to the same config written now."""
  from rnn_research import train  # pylint: disable=g-import-not-at-top  (train imports tasks)
  declared = train.default_config(record["task"]).to_dict()
  return complete(ml_collections.ConfigDict({**declared, **record})).to_dict()


def check(config) -> ml_collections.ConfigDict:
  """`complete(config)` (which checks the task, its options and the backbone), refusing also
  a data set the task does not read and a data file that does not exist: before any data is
  loaded or anything written."""
  completed = complete(config)
  names = TASKS[config.task].data
  if names is not None and config.data not in names:
    raise ValueError(f"data must be one of {list(names)} for task {config.task!r}, got "
                     f"{config.data!r}")
  if config.data_path and not os.path.isfile(config.data_path):
    raise ValueError(f"data_path {config.data_path!r} is not a file (the data set's .pickle or "
                     ".mat file)")
  return completed


def make_task(config) -> Task:
  """The Task of `config.task` built from `check(config)`."""
  config = check(config)
  return TASKS[config.task].builder(config)
