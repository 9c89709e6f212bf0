"""The launchers' command line: bad input ends a command with one line that names the argument
and what it takes, before anything is written.

    app.run(main, flags_parser=cli.parse_flags)   # a missing --study, a misspelt config key
    with cli.bad_input():                          # the checks of launch/sweep.check
      plan = check(...)
"""
import contextlib
import difflib
import os
import re

from absl import app, flags
from ml_collections import config_flags

EXAMPLE = "--study=experiments/odyssey.py:smoke"
_OVERRIDE = re.compile(r"^--(?:config|study)\.([^=]+)")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing of `argv`, with what ml_collections lets through as a traceback said in one
  line: an override of a key the study config lacks (`--config.trial.max_epoch=3`), a study
  file that does not exist; and a missing --study named with an example."""
  try:
    parsed = app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    _exit(_unknown_key(argv, error))
  if not flags.FLAGS["config"].present:
    _exit(f"--study is required: the study to sweep, e.g. {EXAMPLE}")
  path = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")[0]
  if not os.path.isfile(path):
    _exit(f"--study: no file {path!r}; give an experiment file, e.g. {EXAMPLE}")
  return parsed


@contextlib.contextmanager
def bad_input():
  """A ValueError raised in the block (a check of the command's input) ends the command with
  its message, without a traceback."""
  try:
    yield
  except ValueError as error:
    _exit(str(error))


def _exit(message: str):
  raise SystemExit(f"error: {message}")


def _unknown_key(argv: list[str], error: Exception) -> str:
  """Which `--config.<path>` of `argv` names no key of the study config, and the keys there."""
  config = _study_config(argv)
  for argument in argv[1:]:
    match = _OVERRIDE.match(argument)
    if not match or config is None:
      continue
    node, path = config, match.group(1).split(".")
    for depth, key in enumerate(path):
      if not hasattr(node, "keys"):
        break
      if key not in node:
        where = ".".join(["config", *path[:depth]])
        close = difflib.get_close_matches(key, list(node.keys()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"{argument}: {where} has no key {key!r}{hint}; its keys: "
                f"{', '.join(sorted(node.keys()))}")
      node = node[key]
  return f"a --config.<key> override names no key of the study config: {error}"


def _study_config(argv: list[str]):
  """The study config that `--study=FILE[:ARG]` in `argv` names, as config_flags loads it, or
  None when there is none."""
  from rnn_research.experiment import load_module  # pylint: disable=g-import-not-at-top
  given = [a.split("=", 1)[1] for a in argv[1:] if re.match(r"^--(config|study)=", a)]
  if not given:
    return None
  path, colon, arg = given[-1].partition(":")
  return load_module(path).get_config(*([arg] if colon else []))
