"""Task shapes a trial can train, by name (`config.task`). A task module registers its builder
`(config) -> Task` with `@register(name)`; `make_task` imports the module of a name on first use.
"""
import importlib

from rnn_research.tasks.base import Task

# config.task -> the module that registers it (imported lazily: data and models are heavy).
MODULES = {
    "next_step": "rnn_research.tasks.next_step",
    "classify": "rnn_research.tasks.classify", "tag": "rnn_research.tasks.tag",
    "seq2seq": "rnn_research.tasks.seq2seq", "conditional": "rnn_research.tasks.conditional",
    "stream": "rnn_research.tasks.stream",
    "adding": "rnn_research.tasks.synthetic", "copy": "rnn_research.tasks.synthetic",
}
TASKS = {}


def register(name: str):
  """Decorator: `@register("classify")` makes a builder `(config) -> Task` known as `name`."""
  def add(builder):
    TASKS[name] = builder
    return builder
  return add


def make_task(config) -> Task:
  """The Task of `config.task` (default "next_step") built from `config`."""
  name = config.get("task", "next_step")
  if name not in MODULES:
    raise ValueError(f"task must be one of {sorted(MODULES)}, got {name!r}")
  importlib.import_module(MODULES[name])
  return TASKS[name](config)
