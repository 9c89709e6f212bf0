"""Failed trials: a trial that raises is recorded as failed with its error and traceback, its
worker goes on, and it is retried at most `max_retries` times, like an interrupted one."""
import pathlib
import subprocess
import sys

import optuna

from launch import study as studies
from rnn_research.declaration import Param, Study

ROOT = pathlib.Path(__file__).parents[1]
# A study whose every trial raises in training: Odyssey's declaration, whose trials ask for an
# optimizer train.py lacks.
POISON_STUDY = '''
from experiments import odyssey

get_config = odyssey.get_config


def trial_config(config, variant, params, seed):
  trial = odyssey.trial_config(config, variant, params, seed)
  trial.optimizer = "poison"
  return trial
'''


def test_a_trial_that_always_raises_is_recorded_and_retried_up_to_the_cap(fake_chorales,
                                                                           tmp_path):
  study_file = tmp_path / "poison.py"
  study_file.write_text(POISON_STUDY)
  path, data_dir = fake_chorales
  sweep_dir = tmp_path / "sweep"
  run = subprocess.run(
      [sys.executable, "-m", "launch.local", f"--study={study_file}:smoke", "--workers=1",
       f"--sweep_dir={sweep_dir}", "--config.data=standard", f"--config.data_path={path}",
       f"--config.data_dir={data_dir}", "--config.variants=('V',)",
       "--config.trials_per_variant=2", "--config.pack_size=1", "--config.max_retries=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode != 0 and "no trial completed, so there is no report" in run.stderr
  assert "workers" not in run.stderr  # the worker went on after each failure and ended well
  assert "2/2 trials done" in run.stdout and "0 completed, 0 diverged, 2 failed" in run.stdout
  assert "ValueError: optimizer must be one of" in run.stdout
  trials = optuna.load_study(study_name="odyssey/V",
                             storage=f"sqlite:///{sweep_dir / 'study.db'}").get_trials()
  assert len(trials) == 4  # two trials, each retried once
  for trial in trials:
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["status"] == "failed"
    assert trial.user_attrs["error"].startswith("ValueError: optimizer must be one of")
    assert "Traceback" in trial.user_attrs["traceback"]
  retries = {t.number: t.user_attrs.get("retries", 0) for t in trials}
  retried = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
  assert sorted(retries.values()) == [0, 0, 1, 1] and all(retries[n] == 1 for n in retried.values())
  assert sum(studies.is_done(t, max_retries=1) for t in trials) == 2
  workdirs = {t.user_attrs["workdir"] for t in trials}
  assert len(workdirs) == 2  # a retry resumes in its trial's workdir
  for workdir in workdirs:
    log = (sweep_dir / workdir / studies.ERROR_FILE).read_text()
    assert log.count("Traceback") == 2 and "(retries 1)" in log


def test_interrupted_trials_are_retried_up_to_the_cap(tmp_path):
  storage = studies.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
  declared = Study(name="test", data="none", variants={"V": {}}, baseline="V",
                   space={"x": Param("linear", 0.0, 1.0)})
  study = studies.open_study(storage, declared, "V")
  space = declared.distributions()
  first = study.ask(space)
  first.set_user_attr("workdir", "trials/V/0000")
  first.set_user_attr("seed", 0)
  for retries in (1, 2):  # killed while running, twice: retried each time
    assert studies.requeue_interrupted(study, max_retries=2) == 1
    retry = study.ask(space)
    assert retry.params == first.params and retry.user_attrs["retries"] == retries
    assert retry.user_attrs["workdir"] == "trials/V/0000"
  assert studies.requeue_interrupted(study, max_retries=2) == 1  # a third time: no retry left
  trials = study.get_trials()
  assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 3
  assert [studies.is_done(t, max_retries=2) for t in trials] == [False, False, True]
  assert studies.outcome(trials[-1]) == "failed: interrupted"


def test_an_interrupted_pack_is_claimed_whole_again_in_its_order(tmp_path):
  url = f"sqlite:///{tmp_path / 'study.db'}"
  declared = Study(name="test", data="none", variants={"V": {}}, baseline="V",
                   space={"size": Param("int", 1, 1000), "x": Param("linear", 0.0, 1.0)})
  study = studies.open_study(studies.open_storage(url), declared, "V")
  space = declared.distributions()
  claim = lambda: studies.claim_trials(study, 12, space,
                                       studies.claim_lock(url, tmp_path, study.study_name),
                                       size=4, shared=("size",), max_retries=3)
  packs = [claim()[:3], claim()[:3]]  # two packs, each of one size (as a worker marks them)
  for pack in packs:
    for trial in pack:
      trial.set_user_attr("workdir", f"trials/V/{trial.number:04d}")
      trial.set_user_attr("pack", pack[0].user_attrs["workdir"])
  assert [len({t.params["size"] for t in pack}) for pack in packs] == [1, 1]
  for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
    if "pack" not in trial.user_attrs:
      study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # not part of this test
  # a trial of the second pack's size that trained alone (its retry was claimed alone)
  study.enqueue_trial(packs[1][0].params, user_attrs={"workdir": "trials/V/0099",
                                                      "pack": "trials/V/0099"})
  assert len(claim()) == 1
  assert studies.requeue_interrupted(study, max_retries=3) == 7  # the workers are killed
  for pack in packs:  # each pack comes back whole, in its order: it resumes from its checkpoint
    retried = claim()
    assert [t.user_attrs["retry_of"] for t in retried] == [t.number for t in pack]
    assert [t.params for t in retried] == [t.params for t in pack]
    assert {t.user_attrs["pack"] for t in retried} == {pack[0].user_attrs["workdir"]}
  assert [t.user_attrs["workdir"] for t in claim()] == ["trials/V/0099"]  # alone again
  fresh = claim()  # then new trials, a pack sharing a size
  assert len(fresh) == 4 and "retry_of" not in fresh[0].user_attrs
  assert len({t.params["size"] for t in fresh}) == 1
