"""The README's main job, run end to end through its entry point on the smoke config."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def test_demo_learns_the_adding_problem():
  out = subprocess.run(
      [sys.executable, "-m", "experiments.demo", "--config=experiments/demo.py:smoke"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
  baseline = float(re.search(r"baseline MSE ([\d.]+)", out).group(1))
  losses = [float(m) for m in re.findall(r"mse ([\d.]+)", out)]
  assert len(losses) == 3
  assert losses[-1] < 0.5 * baseline < losses[0]
