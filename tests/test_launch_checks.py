"""The launchers check their input before writing anything: bad input is one line naming the
argument and what it takes, with no traceback and no sweep dir left behind, so the corrected
command runs without --overwrite; --dry_run prints the plan and writes nothing."""
import json
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from experiments import odyssey
from launch import sweep

ROOT = pathlib.Path(__file__).parents[1]


def smoke_config(fake_chorales):
  path, data_dir = fake_chorales
  config = odyssey.get_config("smoke")
  config.update(data="standard", data_path=path, data_dir=data_dir)
  return config


@pytest.mark.parametrize("key, value, message", [
    ("data", "jsb_standrd", r"data must be one of \['music21', .*\] for task 'next_step', got "
                            r"'jsb_standrd'"),
    ("data_path", "/nonexistent/JSB_Chorales.mat", r"data_path '/nonexistent/JSB_Chorales.mat' "
                                                   r"is not a file"),
    ("variants", ("V", "LSTM9"), r"variant must be one of .*, got 'LSTM9'"),
    ("trial.task", "next_stepp", r"task must be one of \[.*'next_step'.*\], got 'next_stepp'"),
    ("trial.model.backbone", "lstmm", r"model.backbone must be one of .*, got 'lstmm'"),
    ("trial.optimizer", "adamw", r"optimizer must be one of .*, got 'adamw'"),
    ("trials_per_variant", 0, r"trials_per_variant must be an int >= 1, got 0"),
    ("max_retries", -1, r"max_retries must be an int >= 0, got -1"),
])
def test_bad_values_are_named_before_anything_is_written(fake_chorales, tmp_path, key, value,
                                                         message):
  config = smoke_config(fake_chorales)
  *parents, name = key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  with pytest.raises(ValueError, match=message):
    sweep.check(config, "experiments/odyssey.py:smoke", str(tmp_path / "sweep"), None, False)
  assert not list(tmp_path.iterdir())


def test_unreachable_database_is_named_before_anything_is_written(fake_chorales, tmp_path):
  url = "postgresql://nobody@127.0.0.1:9/none"
  with pytest.raises(ValueError, match=f"cannot open the study database {url!r}"):
    sweep.check(smoke_config(fake_chorales), "experiments/odyssey.py:smoke",
                str(tmp_path / "sweep"), url, False)
  assert not list(tmp_path.iterdir())


def launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.local", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def assert_one_line_error(run, message: str) -> None:
  assert run.returncode != 0 and "Traceback" not in run.stderr
  assert run.stderr.strip().splitlines()[-1].startswith(f"error: {message}")


def test_missing_study_is_required_with_an_example(tmp_path):
  run = launch(f"--sweep_dir={tmp_path / 'sweep'}")
  assert_one_line_error(run, "--study is required: the study to sweep, e.g. --study=experiments/")
  assert not list(tmp_path.iterdir())


def test_misspelt_config_key_names_the_key_and_the_keys_there(tmp_path):
  run = launch("--study=experiments/odyssey.py:smoke", f"--sweep_dir={tmp_path / 'sweep'}",
               "--config.trial.max_epoch=3")
  assert_one_line_error(run, "--config.trial.max_epoch=3: config.trial has no key 'max_epoch' "
                             "(did you mean 'max_epochs'?); its keys: batch_size, ")
  assert not list(tmp_path.iterdir())


def test_corrected_command_runs_after_a_bad_one_and_dry_run_writes_nothing(fake_chorales,
                                                                          tmp_path):
  path, data_dir = fake_chorales
  sweep_dir = tmp_path / "sweep"
  args = ["--study=experiments/odyssey.py:smoke", "--workers=2", f"--sweep_dir={sweep_dir}",
          f"--config.data_path={path}", f"--config.data_dir={data_dir}",
          "--config.variants=('V', 'CIFG')", "--config.trials_per_variant=3"]
  run = launch(*args, "--config.data=standrd")
  assert_one_line_error(run, "data must be one of ")
  assert "got 'standrd'" in run.stderr and not sweep_dir.exists()
  run = launch(*args, "--config.data=standard", "--dry_run")
  assert run.returncode == 0, run.stderr
  for line in (f"sweep dir: {sweep_dir} (new)", "studies:   odyssey/V, odyssey/CIFG",
               "trials:    2 variants x 3 = 6, trained in packs of 2", "workers:   2",
               "data_path: " + path, "run time:  at most ~"):
    assert line in run.stdout
  assert "(4 packs on 2 workers; a pack of V measured here" in run.stdout
  assert not sweep_dir.exists()


def test_sweep_dir_written_before_a_key_was_declared_resumes(fake_chorales, tmp_path):
  """A sweep.json without max_retries (written before the key existed) is the same sweep."""
  config = smoke_config(fake_chorales)
  stored = config.to_dict()
  del stored["max_retries"]
  (tmp_path / sweep.SWEEP_FILE).write_text(json.dumps(
      {"study": str(ROOT / "experiments" / "odyssey.py"), "config": stored}, default=list))
  plan = sweep.check(config, str(ROOT / "experiments/odyssey.py:smoke"), str(tmp_path), None,
                     False)
  assert not plan.replace
  config.trials_per_variant = 5
  with pytest.raises(ValueError, match=r"keys \['config.trials_per_variant'\] differ"):
    sweep.check(config, str(ROOT / "experiments/odyssey.py:smoke"), str(tmp_path), None, False)


def test_a_study_config_without_a_launcher_key_is_named(fake_chorales, tmp_path):
  config = smoke_config(fake_chorales).to_dict()
  del config["max_retries"]
  with pytest.raises(ValueError, match=r"the study config lacks \['max_retries'\]"):
    sweep.check(ml_collections.ConfigDict(config), "experiments/odyssey.py:smoke",
                str(tmp_path / "sweep"), None, False)
  assert not list(tmp_path.iterdir())
