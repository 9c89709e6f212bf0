"""Synthetic sweeps written with Optuna's API as the launcher writes them, and loading them back.

The helpers here (`Sweep`) are imported by the other test_analysis files.
"""
import json
import math
import os

import numpy as np
import optuna
import pytest

from experiments import odyssey
from rnn_research import declaration
from rnn_research.analysis import records as rec

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASELINE_NLL = 11.06
CONFIG = odyssey.get_config()
DISTRIBUTIONS = declaration.of(CONFIG).distributions()


def sample_params(rng: np.random.Generator) -> dict:
  """One draw from the paper's search space."""
  return {"learning_rate": 10 ** rng.uniform(-6, -2),
          "one_minus_momentum": 10 ** rng.uniform(-2, 0),
          "hidden_size": int(round(10 ** rng.uniform(math.log10(20), math.log10(200)))),
          "input_noise": rng.uniform(0, 1)}


class Sweep:
  """A sweep directory of the Odyssey study (its sweep.json) with an Optuna SQLite storage; add
  trials to `odyssey/<variant>`."""

  def __init__(self, sweep_dir, seed: int = 0, db: str | None = None):
    self.dir = str(sweep_dir)
    os.makedirs(self.dir, exist_ok=True)
    with open(os.path.join(self.dir, rec.SWEEP_FILE), "w") as f:
      json.dump({"study": odyssey.__file__, "config": CONFIG.to_dict()}, f)
    self.url = f"sqlite:///{db or os.path.join(self.dir, rec.STUDY_DB)}"
    self.rng = np.random.default_rng(seed)
    self._studies, self._numbers = {}, {}

  def study(self, variant: str) -> optuna.Study:
    if variant not in self._studies:
      self._studies[variant] = optuna.create_study(
          study_name=f"odyssey/{variant}", storage=self.url, direction="minimize")
    return self._studies[variant]

  def _next_number(self, variant: str) -> int:
    self._numbers[variant] = self._numbers.get(variant, -1) + 1
    return self._numbers[variant]

  def _attrs(self, variant, status, number, **extra) -> dict:
    return {"variant": variant, "status": status, "num_params": 1000 + number,
            "workdir": f"trials/{variant}/{number}", "baseline_nll": BASELINE_NLL,
            "data": "jsb_chorales/music21", **extra}

  def completed(self, variant, test_nll, valid_nll=None, params=None, metrics=True):
    """Adds a COMPLETE trial; writes a metrics.jsonl whose best epoch has `valid_nll`."""
    study, number = self.study(variant), self._next_number(variant)
    valid = test_nll - 0.05 if valid_nll is None else valid_nll
    attrs = self._attrs(variant, "completed", number, test_nll=test_nll, valid_nll=valid,
                        best_epoch=6)
    study.add_trial(optuna.trial.create_trial(
        params=params or sample_params(self.rng), distributions=DISTRIBUTIONS, value=valid,
        user_attrs=attrs, state=optuna.trial.TrialState.COMPLETE))
    if metrics:
      self.write_metrics(attrs["workdir"], valid)
    return number

  def diverged(self, variant, step=250):
    attrs = self._attrs(variant, "diverged", self._next_number(variant), diverged_step=step)
    self.study(variant).add_trial(optuna.trial.create_trial(
        params=sample_params(self.rng), distributions=DISTRIBUTIONS, user_attrs=attrs,
        state=optuna.trial.TrialState.FAIL))

  def running(self, variant):
    self.study(variant).add_trial(optuna.trial.create_trial(
        params=sample_params(self.rng), distributions=DISTRIBUTIONS,
        state=optuna.trial.TrialState.RUNNING))

  def write_metrics(self, workdir, best_valid, epochs=10, best_epoch=6):
    """A learning curve that falls to `best_valid` at `best_epoch`, then rises a little."""
    path = os.path.join(self.dir, workdir, rec.METRICS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      for epoch in range(1, epochs + 1):
        valid = best_valid + 0.3 * abs(epoch - best_epoch) * (2.0 if epoch < best_epoch else 0.1)
        f.write(json.dumps({"epoch": epoch, "step": 229 * epoch, "train_loss": valid - 0.4,
                            "valid_nll": valid, "grad_norm": 1.0, "param_norm": 10.0 + epoch,
                            "wall_time": 3.0 * epoch}) + "\n")


def test_load_trials_reads_statuses_values_and_params(tmp_path):
  sweep = Sweep(tmp_path)
  params = sample_params(sweep.rng)
  sweep.completed("V", 9.0, valid_nll=9.2, params=params)
  sweep.completed("V", 9.5)
  sweep.diverged("V", step=77)
  sweep.running("V")
  sweep.completed("NFG", 10.0)
  sweep.study("NFG").add_trial(optuna.trial.create_trial(  # a crash, not a divergence
      params=sample_params(sweep.rng), distributions=DISTRIBUTIONS,
      state=optuna.trial.TrialState.FAIL))
  records = rec.load_trials(sweep.dir, rec.load_study(sweep.dir))
  by_variant = {v: [r for r in records if r.variant == v] for v in ("V", "NFG")}
  assert [r.status for r in by_variant["V"]] == ["completed", "completed", "diverged", "running"]
  assert [r.status for r in by_variant["NFG"]] == ["completed", "failed"]
  first = by_variant["V"][0]
  assert (first.test_metric, first.valid_metric, first.best_epoch) == (9.0, 9.2, 6)
  assert first.params["hidden_size"] == params["hidden_size"]
  assert first.params["learning_rate"] == pytest.approx(params["learning_rate"])
  assert first.workdir == "trials/V/0" and first.baseline_nll == BASELINE_NLL
  diverged = by_variant["V"][2]
  assert diverged.test_metric is None and diverged.valid_metric is None
  assert diverged.diverged_step == 77


def test_an_interrupted_trial_counts_once_through_its_retry(tmp_path):
  sweep = Sweep(tmp_path)
  params = sample_params(sweep.rng)
  for number in range(2):  # two interrupted trials (a killed worker), the first retried
    sweep.study("V").add_trial(optuna.trial.create_trial(
        params=params, distributions=DISTRIBUTIONS, state=optuna.trial.TrialState.FAIL,
        user_attrs={"workdir": f"trials/V/{number}"}))
  sweep.study("V").add_trial(optuna.trial.create_trial(
      params=params, distributions=DISTRIBUTIONS, value=9.0,
      user_attrs={"retry_of": 0, "workdir": "trials/V/0", "status": "completed",
                  "test_nll": 9.1}, state=optuna.trial.TrialState.COMPLETE))
  records = rec.load_trials(sweep.dir, rec.load_study(sweep.dir))
  assert [(r.number, r.status) for r in records] == [(1, rec.FAILED), (2, rec.COMPLETED)]


def test_an_old_sweep_json_of_a_built_in_study_gets_its_declaration(tmp_path):
  """A sweep.json written before studies declared themselves (config.name, no config.study)."""
  sweep = Sweep(tmp_path)
  config = {k: v for k, v in CONFIG.to_dict().items() if k != "study"}
  config["name"] = "odyssey"
  config["trial"]["data"] = "nottingham"
  with open(os.path.join(sweep.dir, rec.SWEEP_FILE), "w") as f:
    json.dump({"study": "/elsewhere/experiments/odyssey.py", "config": config}, f)
  study = rec.load_study(sweep.dir)
  assert study == declaration.Study.from_dict({**CONFIG.study.to_dict(), "data": "nottingham"})
  assert (study.baseline, study.report[0]) == ("V", "paper")


def test_a_sweep_json_of_no_declared_study_is_refused(tmp_path):
  with open(tmp_path / rec.SWEEP_FILE, "w") as f:
    json.dump({"study": "/home/me/my_study.py", "config": {"name": "mine"}}, f)
  with pytest.raises(rec.SweepError, match="has no study declaration"):
    rec.load_study(str(tmp_path))


def test_variants_come_in_the_papers_order(tmp_path):
  sweep = Sweep(tmp_path)
  for variant in ("CIFG", "NFG", "V"):
    sweep.completed(variant, 9.0)
  optuna.create_study(study_name="other/V", storage=sweep.url)  # another project's study
  assert rec.study_variants(rec.load_study(sweep.dir), sweep.url) == ["V", "NFG", "CIFG"]


def test_storage_url_elsewhere_is_used(tmp_path):
  sweep = Sweep(tmp_path / "sweep", db=str(tmp_path / "elsewhere.db"))
  sweep.completed("V", 9.0)
  assert not os.path.exists(os.path.join(sweep.dir, rec.STUDY_DB))
  records = rec.load_trials(sweep.dir, rec.load_study(sweep.dir), storage=sweep.url)
  assert [r.test_metric for r in records] == [9.0]


def test_missing_database_names_the_path(tmp_path):
  with pytest.raises(rec.SweepError) as error:
    rec.storage_url(str(tmp_path))
  message = str(error.value)
  assert os.path.join(str(tmp_path), "study.db") in message
  assert "<study>/<variant>" in message


def test_storage_without_odyssey_studies_says_so(tmp_path):
  sweep = Sweep(tmp_path)
  optuna.create_study(study_name="something_else", storage=sweep.url)
  with pytest.raises(rec.SweepError, match="no Optuna study named 'odyssey/<variant>'"):
    rec.load_trials(sweep.dir, rec.load_study(sweep.dir))


def test_read_metrics_skips_a_line_cut_off_mid_write(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"epoch": 1, "valid_nll": 9.5}\n\n{"epoch": 2, "valid_nll": 9.1}\n'
                  '{"epoch": 3, "va')
  assert rec.read_metrics(str(path)) == [{"epoch": 1, "valid_nll": 9.5},
                                         {"epoch": 2, "valid_nll": 9.1}]
  assert rec.read_metrics(str(tmp_path / "absent.jsonl")) is None
