"""The local launcher: a sweep killed mid-trial and restarted with the same command finishes
every trial exactly once, resuming the interrupted one from its checkpoint; bad input is refused
before any trial starts."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import optuna

ROOT = pathlib.Path(__file__).parents[1]
VARIANTS = ("V", "CIFG")
TRIALS = 3


def command(sweep_dir, fake_chorales, *extra):
  path, data_dir = fake_chorales
  return [sys.executable, "-m", "launch.local", "--study=experiments/odyssey.py:smoke",
          "--workers=2", f"--sweep_dir={sweep_dir}", "--config.data=standard",
          f"--config.data_path={path}", f"--config.data_dir={data_dir}",
          f"--config.variants={VARIANTS!r}", f"--config.trials_per_variant={TRIALS}", *extra]


def _live_members(group: int) -> list[int]:
  """The processes of process group `group` that are alive (not zombies), from /proc."""
  live = []
  for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)"
    except OSError:  # it ended meanwhile
      continue
    if int(fields[2]) == group and fields[0] != "Z":
      live.append(int(stat.parent.name))
  return live


def test_killed_sweep_resumes_and_finishes_every_trial_once(fake_chorales, tmp_path):
  sweep_dir = tmp_path / "sweep"
  sweep = subprocess.Popen(command(sweep_dir, fake_chorales), cwd=ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  # Kill the launcher and its workers while some trial has a checkpoint but no result.
  while not any((wd / "checkpoints" / "latest").is_dir() and not (wd / "result.json").exists()
                for wd in sweep_dir.glob("trials/*/*")):
    assert sweep.poll() is None and time.time() < deadline, "the sweep ended before the kill"
    time.sleep(0.05)
  os.kill(sweep.pid, signal.SIGKILL)  # the launcher alone: its workers end with it
  sweep.wait()
  deadline = time.time() + 60
  while _live_members(sweep.pid):
    if time.time() > deadline:
      os.killpg(sweep.pid, signal.SIGKILL)
      raise AssertionError("the workers outlived their launcher")
    time.sleep(0.2)

  out = subprocess.run(command(sweep_dir, fake_chorales), cwd=ROOT, capture_output=True, text=True,
                       timeout=900, check=True).stdout
  report = pathlib.Path(out.strip().splitlines()[-1].removeprefix("report: "))
  assert (report if report.is_absolute() else ROOT / report).is_file()

  storage = f"sqlite:///{sweep_dir / 'study.db'}"
  retried = 0
  for variant in VARIANTS:
    trials = optuna.load_study(study_name=f"odyssey/{variant}", storage=storage).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE or
            t.user_attrs.get("status") == "diverged"]
    assert len(done) == TRIALS
    workdirs = [t.user_attrs["workdir"] for t in done]
    assert len(set(workdirs)) == TRIALS
    for trial in done:
      metrics = (sweep_dir / trial.user_attrs["workdir"] / "metrics.jsonl").read_text().splitlines()
      epochs = [json.loads(line)["epoch"] for line in metrics]
      assert epochs == list(range(1, len(epochs) + 1))
      retried += "retry_of" in trial.user_attrs
  assert retried >= 1


def test_unknown_variant_is_refused(fake_chorales, tmp_path):
  args = command(tmp_path / "sweep", fake_chorales, "--config.variants=('V', 'LSTM9')")
  run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode != 0 and "variant must be one of" in run.stderr
  assert not (tmp_path / "sweep").exists()


def test_sweep_dir_of_another_config_is_refused(fake_chorales, tmp_path):
  sweep_dir = tmp_path / "sweep"
  sweep_dir.mkdir()
  (sweep_dir / "sweep.json").write_text(json.dumps({"study": "x", "config": {"name": "other"}}))
  run = subprocess.run(command(sweep_dir, fake_chorales), cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode != 0 and "holds a sweep of a different config" in run.stderr
  assert "--overwrite" in run.stderr


def test_unreachable_database_is_named(fake_chorales, tmp_path):
  url = "postgresql://nobody@127.0.0.1:9/none"
  run = subprocess.run(command(tmp_path / "sweep", fake_chorales, f"--storage={url}"), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode != 0 and f"cannot open the study database {url!r}" in run.stderr
