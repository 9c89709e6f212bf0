"""A study declares itself (rnn_research.declaration): the declaration's checks, its record in
sweep.json, trial configs from it, old sweeps of the built-in studies, and a study of one's own
(a file that is none of ours) run end to end through the launcher to its report."""
import csv
import json
import pathlib
import subprocess
import sys
import textwrap

import optuna
import pytest

from experiments import odyssey, rnn_vs_transformer
from launch import sweep as sweeps
from rnn_research import declaration, train
from rnn_research.declaration import Param, Study

ROOT = pathlib.Path(__file__).parents[1]
# A researcher's study: two dropout rates of a GRU on a short adding problem, 3 trials each (a
# t-test needs 3 per group), one epoch; each variant's trials train as one program.
OWN_STUDY = '''
    """Dropout on the adding problem."""
    from rnn_research import train
    from rnn_research.declaration import Param, Study

    STUDY = Study(name="dropout", data="adding", unit="MSE",
                  variants={"none": {"model.dropout": 0.0}, "half": {"model.dropout": 0.5}},
                  baseline="none", space={"learning_rate": Param("log", 1e-3, 1e-1, label="lr")})


    def get_config(arg=None):
      trial = train.default_config("adding", "gru")
      trial.update(data="adding", optimizer="adam", batch_size=16, max_epochs=1, pad_multiple=1,
                   task_options=dict(length=8, train_size=64, eval_size=32))
      return STUDY.config(trial, trials_per_variant=3, pack_size=3)
'''


def small_study(**changes) -> Study:
  fields = dict(name="s", data="adding", variants={"a": {}, "b": {"model.dropout": 0.5}},
                baseline="a", space={"learning_rate": Param("log", 1e-3, 1e-1)})
  return Study(**{**fields, **changes})


@pytest.mark.parametrize("changes, message", [
    (dict(baseline="c"), r"baseline must be one of the variants \['a', 'b'\], got 'c'"),
    (dict(baseline=None), "the 'tests' section needs a baseline"),
    (dict(space={}), "space must declare at least one param"),
    (dict(variants={}), "variants must name at least one variant"),
    (dict(name="a/b"), "name must be a non-empty string without '/'"),
    (dict(direction="down"), r"direction must be one of \['minimize', 'maximize'\]"),
    (dict(pack_shared=("hidden",)), r"pack_shared \['hidden'\] are not params"),
])
def test_a_declaration_that_does_not_hold_is_named(changes, message):
  with pytest.raises(ValueError, match=message):
    small_study(**changes)


@pytest.mark.parametrize("args, message", [
    (("exp", 1, 2), r"scale must be one of \['log', 'linear', 'int', 'log_int', 'categorical'\]"),
    (("log", 0.0, 1.0), "needs low > 0"),
    (("linear", 1.0, 1.0), "needs low < high"),
    (("int", 1, 2.5), "whole low and high"),
    (("categorical",), "needs choices"),
])
def test_a_param_that_does_not_hold_is_named(args, message):
  with pytest.raises(ValueError, match=message):
    Param(*args)


def test_params_sample_on_their_scale():
  dists = {"a": Param("log", 1e-3, 1e-1), "b": Param("log_int", 8, 64), "c": Param("int", 1, 3),
           "d": Param("categorical", choices=("x", "y"))}
  dists = {name: p.distribution() for name, p in dists.items()}
  assert dists["a"] == optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
  assert dists["b"] == optuna.distributions.IntDistribution(8, 64, log=True)
  assert dists["c"] == optuna.distributions.IntDistribution(1, 3)
  assert dists["d"] == optuna.distributions.CategoricalDistribution(("x", "y"))


def test_the_record_keeps_the_declared_order_through_json():
  study = small_study(variants={"z": {}, "a": {"model": {"dropout": 0.1}}}, baseline="z",
                      space={"momentum": Param("linear", 0.0, 0.9),
                             "learning_rate": Param("log", 1e-3, 1e-1, key="learning_rate")})
  back = Study.from_dict(json.loads(json.dumps(study.to_dict(), sort_keys=True)))
  assert back == study
  assert list(back.variants) == ["z", "a"] and list(back.space) == ["momentum", "learning_rate"]
  with pytest.raises(ValueError, match=r"study keys \['colour'\] are not declaration fields"):
    Study.from_dict({**study.to_dict(), "colour": "red"})


def test_a_trial_config_is_the_variant_and_the_sampled_values():
  study = small_study(space={"learning_rate": Param("log", 1e-3, 1e-1),
                             "width": Param("log_int", 8, 64, key="model.hidden_size")})
  config = study.config(train.default_config("adding", "gru"), trials_per_variant=2)
  trial = study.trial_config(config, "b", {"learning_rate": 0.01, "width": 16}, seed=4)
  assert (trial.model.dropout, trial.model.hidden_size, trial.learning_rate, trial.seed) == (
      0.5, 16, 0.01, 4)
  assert config.trial.model.dropout == 0.0  # the base config is left as it was
  wrong = small_study(variants={"a": {"model.dropuot": 0.5}})
  config = wrong.config(train.default_config("adding", "gru"), trials_per_variant=2)
  with pytest.raises(ValueError, match="'model.dropuot' .* is not a key of the trial config"):
    wrong.trial_config(config, "a", {"learning_rate": 0.01}, seed=0)


def test_the_launcher_checks_the_declaration_before_writing():
  config = small_study().config(train.default_config("adding", "gru"), trials_per_variant=2)
  module = object()
  sweeps.check_config(config, module)
  for key, value, message in (
      ("variants", ("a", "c"), r"variant must be one of \['a', 'b'\], got 'c'"),
      ("study.report", ("tests", "plots"), r"report sections \['plots'\] are unknown"),
      ("study.baseline", "c", "baseline must be one of the variants")):
    changed = config.copy_and_resolve_references()
    with changed.unlocked():
      changed.update_from_flattened_dict({key: value})
    with pytest.raises(ValueError, match=message):
      sweeps.check_config(changed, module)


def test_an_old_odyssey_sweep_json_normalises_to_the_new_config():
  """A sweep of experiments/odyssey.py:cpu written before studies declared themselves (like the
  CPU reproduction's) binds to the same config written now, so it resumes and reports."""
  config = odyssey.get_config("cpu")
  new = json.loads(json.dumps(config.to_dict()))
  # Written then: no declaration, no sampler seed, no retry cap; the study's name at the top.
  old = {k: v for k, v in new.items() if k not in ("study", "seed", "max_retries")}
  old["name"] = "odyssey"
  record = sweeps.complete_record({"study": "/anywhere/experiments/odyssey.py", "config": old},
                                  config)
  assert json.loads(json.dumps(record["config"])) == new
  other = sweeps.complete_record({"study": "/home/me/mine.py", "config": {"name": "mine"}},
                                 config)
  assert other["config"] != record["config"]  # refused as a different config


def test_the_comparison_study_declares_its_section_and_accepts_any_size():
  config = rnn_vs_transformer.get_config("smoke")
  study = declaration.of(config)
  assert study.report == ("comparison",) and study.baseline is None
  assert list(study.variants) == list(config.variants)
  declaration.check_variants(rnn_vs_transformer, config.copy_and_resolve_references())
  with config.unlocked():
    config.variants = ("jsb-gru-3k",)
  declaration.check_variants(rnn_vs_transformer, config)
  with config.unlocked():
    config.variants = ("jsb-lstm-3k",)
  with pytest.raises(ValueError, match="<benchmark>-<backbone>-<size>"):
    declaration.check_variants(rnn_vs_transformer, config)


def test_a_study_of_ones_own_runs_through_the_launcher_to_its_report(tmp_path):
  study_file = tmp_path / "dropout_study.py"
  study_file.write_text(textwrap.dedent(OWN_STUDY))
  sweep_dir = tmp_path / "sweep"
  run = subprocess.run(
      [sys.executable, "-m", "launch.local", f"--study={study_file}", "--workers=1",
       f"--sweep_dir={sweep_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  stored = json.loads((sweep_dir / "sweep.json").read_text())
  assert stored["config"]["study"]["baseline"] == "none"
  report_dir = sweep_dir / "report"
  text = (report_dir / "report.md").read_text()
  assert text.startswith("# dropout — adding report")
  assert "- Trials: 6 in 2 variant studies: 6 completed" in text
  assert "![Test NLL per variant](test_nll_boxes.png)" in text
  assert "### Table 1: trials and test NLL (MSE)" in text
  assert "### Table 2: Welch's t-test of each variant's mean test NLL against none" in text
  header = next(line for line in text.splitlines() if line.startswith("| variant | n (all)"))
  assert "vs none (all)" in header
  with open(report_dir / "trials.csv") as f:
    rows = list(csv.DictReader(f))
  half = sorted(float(r["test_nll"]) for r in rows if r["variant"] == "half")
  tests = text[text.index("### Table 2"):].splitlines()
  row = next(line for line in tests if line.startswith("| half | 3 |"))
  storage = f"sqlite:///{sweep_dir / 'study.db'}"
  none = sorted(t.user_attrs["test_nll"] for t in optuna.load_study(
      study_name="dropout/none", storage=storage).get_trials())
  assert f"| {sum(half) / 3 - sum(none) / 3:+.3f} |" in row
  assert "| variant | trials | lr | interactions |" in text  # fANOVA over the declared space
  assert "- half: skipped, 3 completed trials (needs 5)." in text  # marginals
  assert "![Learning curves](learning_curves.png)" in text
  for name in ("test_nll_boxes.png", "learning_curves.png"):
    assert (report_dir / name).read_bytes().startswith(b"\x89PNG")
  assert {r["variant"] for r in rows} == {"none", "half"} and len(rows) == 6
  assert all(1e-3 <= float(r["learning_rate"]) <= 1e-1 for r in rows)
