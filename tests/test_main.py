"""One trial of any experiment without a sweep: `python -m rnn_research.main`."""
import json
import pathlib
import subprocess
import sys

import optuna
import pytest

from experiments import char_lm, odyssey
from rnn_research import declaration, experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_one_trial_of_a_study_draws_its_params_from_the_seed():
  config = odyssey.get_config("smoke")
  trial = experiment.one_trial(odyssey, config, "NP", seed=3)
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
  params = study.ask(declaration.of(config).distributions()).params
  assert trial.model.variant == "NP" and trial.seed == 3
  assert trial.learning_rate == params["learning_rate"]
  assert trial.model.hidden_size == params["hidden_size"]
  assert experiment.one_trial(odyssey, config).model.variant == config.variants[0]
  with pytest.raises(ValueError, match=r"variant must be one of \['V',.*got 'W'"):
    experiment.one_trial(odyssey, config, "W")


def test_one_trial_of_variants_and_of_a_trial_config():
  config = char_lm.get_config("smoke")
  assert experiment.one_trial(char_lm, config).model.backbone == "lstm"
  plain = config.trial
  assert experiment.one_trial(object(), plain) is plain
  with pytest.raises(ValueError, match="has no variants; got variant 'lstm'"):
    experiment.one_trial(object(), plain, "lstm")


def test_main_trains_one_trial_into_its_workdir(fake_chorales, tmp_path):
  path, data_dir = fake_chorales
  workdir = tmp_path / "trial"
  run = subprocess.run(
      [sys.executable, "-m", "rnn_research.main", "--config=experiments/odyssey.py:smoke",
       f"--workdir={workdir}", "--variant=CIFG", "--seed=2", "--config.data=standard",
       f"--config.data_path={path}", f"--config.data_dir={data_dir}",
       "--config.trial.max_epochs=1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads((workdir / "result.json").read_text())
  assert result["status"] == "completed" and result["epochs"] == 1
  assert json.loads(run.stdout[run.stdout.index("{\n"):]) == result
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["variant"] == "CIFG" and config["seed"] == 2
