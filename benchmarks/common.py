"""What every benchmark records about the machine."""
import pathlib
import platform


def cpu_name() -> str:
  """The processor's model name (Linux), else the machine type."""
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  if cpuinfo.exists():
    for line in cpuinfo.read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return platform.machine()
