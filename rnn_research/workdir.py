"""A trial's workdir: config.json (checked against the config that runs in it), metrics.jsonl
(one line per epoch) and result.json (once finished); checkpoints, and env.json (what each run
ran with, see rnn_research.provenance), live beside them."""
import json
import os
import pathlib
import shutil
import socket
from typing import Callable


def check_binding(directory, filename: str, record: dict, overwrite: bool, *, kind: str,
                  remedy: str, normalise: Callable[[dict], dict] = lambda r: r) -> bool:
  """Whether `directory` must be deleted before `record` is bound to it (`bind_config`): it
  holds another config's `kind` and `overwrite` is set; without `overwrite`, a ValueError
  that names the differing keys and the `remedy`. Writes nothing."""
  path = pathlib.Path(directory) / filename
  if not path.exists():
    return False
  stored = _as_stored(normalise(json.loads(path.read_text())))
  if stored == _as_stored(record):
    return False
  if not overwrite:
    raise ValueError(f"{directory} holds {kind} of a different config (keys "
                     f"{differing_keys(stored, _as_stored(record))} differ); {remedy}")
  return True


def bind_config(directory, filename: str, record: dict, overwrite: bool, *, kind: str,
                remedy: str, normalise: Callable[[dict], dict] = lambda r: r) -> None:
  """Writes `record` (JSON) to directory/filename, the config a directory belongs to. A
  directory that holds another config's `kind` is refused, naming the differing keys, or with
  `overwrite` deleted first. `normalise` brings a stored record to the form of `record` first
  (the defaults declared since it was written filled in)."""
  directory = pathlib.Path(directory)
  if check_binding(directory, filename, record, overwrite, kind=kind, remedy=remedy,
                   normalise=normalise):
    shutil.rmtree(directory)
  directory.mkdir(parents=True, exist_ok=True)
  write_at_once(directory / filename, json.dumps(_as_stored(record), indent=1, sort_keys=True))


def _as_stored(record: dict) -> dict:
  return json.loads(json.dumps(record))  # tuples become lists


def write_at_once(path: pathlib.Path, text: str) -> None:
  """Replaces `path` by a file holding `text` in one step: a reader, or a kill meanwhile,
  finds the old file or the new, never part of one (the processes of a multi-host trial all
  write the same files)."""
  temporary = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}")
  temporary.write_text(text)
  os.replace(temporary, path)


class Workdir:
  """The files of one trial."""

  def __init__(self, path, config, overwrite: bool, *,
               normalise: Callable[[dict], dict] = lambda r: r):
    """Binds the directory to `config` (see bind_config, which `normalise` is passed to)."""
    self.path = pathlib.Path(path)
    self.metrics_file = self.path / "metrics.jsonl"
    self.result_file = self.path / "result.json"
    bind_config(self.path, "config.json", config.to_dict(), overwrite, kind="a trial",
                remedy="use overwrite=True (--overwrite) to start it afresh", normalise=normalise)

  def result(self) -> dict | None:
    return json.loads(self.result_file.read_text()) if self.result_file.exists() else None

  def finish(self, result: dict) -> dict:
    write_at_once(self.result_file, json.dumps(result, indent=1))
    return result

  def metrics(self, through_epoch: int | None = None) -> list[dict]:
    """The metrics.jsonl lines (one per epoch), those up to `through_epoch` if given."""
    lines = self.metrics_file.read_text().splitlines() if self.metrics_file.exists() else []
    records = [json.loads(line) for line in lines]
    return [r for r in records if through_epoch is None or r["epoch"] <= through_epoch]

  def append_metrics(self, record: dict, keep_through_epoch: int) -> None:
    """Appends an epoch's line, first dropping lines after `keep_through_epoch` (left by a run
    that was killed between writing metrics and checkpointing)."""
    records = self.metrics(keep_through_epoch) + [record]
    write_at_once(self.metrics_file, "".join(json.dumps(r) + "\n" for r in records))


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
  """The dotted keys whose values differ between two nested dicts."""
  keys = []
  for key in sorted(set(a) | set(b)):
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
      keys += differing_keys(a[key], b[key], f"{prefix}{key}.")
    elif a.get(key) != b.get(key):
      keys.append(prefix + key)
  return keys
