"""What every benchmark records about the machine, and how it writes its result."""
import json
import pathlib
import platform
import sys

from rnn_research import provenance


def cpu_name() -> str:
  """The processor's model name (Linux), else the machine type."""
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  if cpuinfo.exists():
    for line in cpuinfo.read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return platform.machine()


def main_flags() -> dict:
  """{name: value} of the absl flags that the benchmark run (the main module) defines."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return {f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(sys.argv[0])}


def write_json(path: pathlib.Path, result: dict, config: dict) -> None:
  """Writes a benchmark's `result` to `path` with the environment it ran in under "env" (see
  rnn_research.provenance), `config` (the benchmark's arguments) included."""
  record = {**result, "env": provenance.environment(config)}
  path.write_text(json.dumps(record, indent=1, default=str) + "\n")
