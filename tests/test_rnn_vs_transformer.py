"""The comparison study: parameter matching, variants and trial configs, the synthetic tasks,
sample rendering, and the smoke study end to end through the launcher and its report."""
import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments import rnn_vs_transformer as study
from rnn_research.analysis import comparison, samples
from rnn_research.models import NextStepModel
from rnn_research.backbones.convolutional import TCN
from rnn_research.backbones.sizing import count_params, match_width
from rnn_research.tasks import make_task
from rnn_research.train import default_config

ROOT = pathlib.Path(__file__).parents[1]


def _config(backbone: str, width: int, **options):
  return ml_collections.ConfigDict(dict(backbone=backbone, hidden_size=width, num_layers=2,
                                        backend="scan", dropout=0.0, **options))


def test_count_params_counts_the_real_model():
  config = _config("transformer", 8, num_heads=2)
  model = NextStepModel(config, 5, 3, rngs=nnx.Rngs(0))
  real = sum(np.size(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert count_params(lambda: NextStepModel(config, 5, 3, rngs=nnx.Rngs(0))) == real


@pytest.mark.parametrize("backbone, step, target", [("mlp", 1, 1500), ("transformer", 4, 6000)])
def test_match_width_picks_the_closest_count(backbone, step, target):
  make = lambda width: NextStepModel(_config(backbone, width, num_heads=4, window=3), 5, 5,
                                     rngs=nnx.Rngs(0))
  width = match_width(make, target, step=step, max_width=40)
  counts = {w: count_params(lambda w=w: make(w)) for w in range(step, 41, step)}  # brute force
  assert width % step == 0
  assert abs(counts[width] - target) == min(abs(c - target) for c in counts.values())
  with pytest.raises(ValueError, match="raise max_width"):
    match_width(make, 10 ** 9, step=step, max_width=40)


def test_variants_parse_and_bad_ones_are_named():
  assert study.parse_variant("copy500-lstm_CIFG-1m") == ("copy500", "lstm_CIFG", 1_000_000)
  assert len(study.get_config().variants) == 10 * 6 * 3
  for bad in ("jsb-lstm-50k", "mnist-gru-50k", "jsb-gru-50"):
    with pytest.raises(ValueError, match="<benchmark>-<backbone>-<size>"):
      study.check_variant(bad)


def test_each_benchmark_trains_on_its_own_budget():
  config = study.get_config("cpu")
  assert all(study.parse_variant(v) for v in config.variants)
  params = {"learning_rate": 1e-3, "dropout": 0.0}
  budgets = config.budgets
  for variant, budget in (("jsb-gru-50k", budgets.jsb), ("abc-mlp-50k", budgets.abc)):
    trial = study.trial_config(config, variant, params, seed=0)
    assert {key: trial[key] for key in budget} == budget.to_dict()
  trial = study.trial_config(config, "copy100-tcn-200k", params, seed=0)
  assert (trial.batch_size, trial.length_buckets) == (config.trial.batch_size, 0)
  assert trial.max_epochs == budgets.synthetic.max_epochs
  assert (trial.task_options.train_size, trial.task_options.eval_size) == (
      budgets.synthetic.train_size, budgets.synthetic.eval_size)
  with pytest.raises(ValueError, match="'gpu'.*'cpu'"):
    study.get_config("gpu")


def test_trial_configs_match_size_and_cover_the_sequence():
  config = study.get_config()
  params = {"learning_rate": 3e-3, "dropout": 0.25}
  trial = study.trial_config(config, "copy200-tcn-50k", params, seed=7)
  assert (trial.task, trial.task_options.length, trial.seed) == ("copy", 200, 7)
  assert (trial.model.dropout, trial.learning_rate) == (0.25, 3e-3)
  receptive_field = lambda blocks: nnx.eval_shape(
      lambda: TCN(1, 1, num_layers=blocks, kernel_size=3, rngs=nnx.Rngs(0))).receptive_field
  assert receptive_field(trial.model.num_layers) >= 220 > receptive_field(
      trial.model.num_layers - 1)
  # The folk tunes are cut to the length the TCN's receptive field covers.
  trial = study.trial_config(config, "abc-tcn-50k", params, seed=0)
  assert trial.task_options.max_length == study.ABC_MAX_LENGTH
  assert receptive_field(trial.model.num_layers) >= study.ABC_MAX_LENGTH
  trial = study.trial_config(config, "adding100-transformer-50k", params, seed=0)
  make = study.model_factory(trial)

  def sized(width):
    model = ml_collections.ConfigDict(trial.model.to_dict())
    model.hidden_size = width
    return count_params(lambda: make(model))

  width = trial.model.hidden_size
  assert width % 8 == 0
  assert abs(sized(width) - 50_000) <= min(abs(sized(width + 8) - 50_000),
                                           abs(sized(width - 8) - 50_000))


def _task(name: str):
  config = default_config()
  config.task, config.eval_batch_size = name, 4
  config.task_options = dict(length=12, train_size=8, eval_size=4)
  config.model.update(backbone="mlp", hidden_size=6, window=4)
  task = make_task(config)
  return task, task.make_model(config.model, nnx.Rngs(0))


def test_adding_task_reads_each_sequences_last_step(rng):
  task, model = _task("adding")
  batch = task.eval_batches["test"][0]
  assert batch["inputs"].shape == (4, 12, 2) and task.baseline_nll == pytest.approx(1 / 6)
  lengths = np.array([12, 5, 5, 12])
  predictions = np.asarray(model(jnp.asarray(batch["inputs"]), jnp.asarray(lengths)))
  for b, n in enumerate(lengths):  # each sequence alone, cut at its length
    ys, _ = model.backbone(jnp.asarray(batch["inputs"][b:b + 1, :n]))
    assert predictions[b] == pytest.approx(float(model.head(ys[:, -1])[0, 0]), rel=1e-5)
  total, count = task.loss(model, batch)
  expected = np.sum((np.asarray(model(batch["inputs"], batch["lengths"])) - batch["targets"]) ** 2)
  assert (float(total), int(count)) == (pytest.approx(expected, rel=1e-5), 4)


def test_copy_task_scores_the_copied_symbols():
  task, model = _task("copy")
  batch = task.eval_batches["validation"][0]
  assert batch["inputs"].shape == (4, 32)
  logits = np.asarray(model(batch["inputs"], batch["lengths"]))
  right, count = task.metrics(model, batch)["accuracy"]
  expected = (logits[:, -10:].argmax(-1) == batch["targets"][:, -10:]).sum()
  assert (int(right), int(count)) == (expected, 40)


def test_roll_to_abc_reads_back_through_music21(rng):
  roll = (rng.uniform(size=(9, 88)) < 0.04).astype(np.uint8)
  roll[:, :15] = roll[:, 70:] = 0  # within music21's comfortable range
  text = samples.roll_to_abc(roll, title="test")
  np.testing.assert_array_equal(samples.abc_to_roll(text), roll)
  assert samples.abc_to_roll("not a tune [[") is None


def _trial(variant, number, valid, test, status="completed", params=1000):
  benchmark, backbone, size = variant.split("-")
  result = {"valid_nll": valid, "test_nll": test, "num_params": params}
  return comparison.Trial(variant, benchmark, backbone, size, number, status, {}, result, None,
                          None)


def test_report_takes_each_backbones_best_trial_on_validation():
  trials = [_trial("jsb-gru-50k", 0, 9.0, 8.0), _trial("jsb-gru-50k", 1, 8.5, 8.9),
            _trial("jsb-gru-200k", 2, 8.7, 7.0, params=200_000),
            _trial("jsb-gru-200k", 3, 1.0, 1.0, status="diverged"),
            _trial("jsb-tcn-50k", 4, 8.2, 8.1)]
  best = comparison.best_trials(trials)
  assert {v: t.number for v, t in best.items()} == {"jsb-gru-50k": 1, "jsb-gru-200k": 2,
                                                    "jsb-tcn-50k": 4}
  assert {n: t.number for n, t in comparison.best_per_backbone(best, "jsb").items()} == \
      {"gru": 1, "tcn": 4}
  table = comparison.headline_table(best, ["jsb"])
  assert "| gru | 8.900 (1K) |" in table and "| tcn | 8.100 (1K) |" in table
  near_1m = {v: _trial(v, 0, 8.0, 8.0, params=n)
             for v, n in (("jsb-gru-1m", 999_499), ("jsb-tcn-1m", 999_985))}
  table = comparison.headline_table(near_1m, ["jsb"])
  assert "| gru | 8.000 (999K) |" in table and "| tcn | 8.000 (1.00M) |" in table


def test_report_says_to_what_length_sequences_were_cut(tmp_path):
  best = {}
  for variant, options in (("abc-gru-50k", {"max_length": 512}), ("jsb-gru-50k", {})):
    (tmp_path / variant).mkdir()
    config = default_config()
    config.task_options.update(options)
    (tmp_path / variant / "config.json").write_text(config.to_json())
    best[variant] = dataclasses.replace(_trial(variant, 0, 1.0, 1.0), workdir=variant)
  note = comparison.cut_note(str(tmp_path), best, "abc")
  assert "cut to its first 512 steps" in note[0]
  assert comparison.cut_note(str(tmp_path), best, "jsb") == []


def test_smoke_study_runs_end_to_end(fake_chorales, tmp_path):
  import optuna  # pylint: disable=g-import-not-at-top  (the launcher's dependency)
  path, data_dir = fake_chorales
  sweep_dir = tmp_path / "sweep"
  variants = ("jsb-gru-3k", "jsb-mlp-3k")  # the Transformer and the rest: the unit tests
  run = subprocess.run(
      [sys.executable, "-m", "launch.local", "--study=experiments/rnn_vs_transformer.py:smoke",
       "--workers=2", f"--sweep_dir={sweep_dir}", "--config.jsb_data=standard",
       f"--config.data_path={path}", f"--config.data_dir={data_dir}",
       f"--config.variants={variants!r}", "--config.budgets.jsb.max_epochs=1",
       "--config.budgets.jsb.pad_multiple=40"],  # the fake chorales are short: one shape
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  report = sweep_dir / "report" / "report.md"
  text = report.read_text()
  storage = f"sqlite:///{sweep_dir / 'study.db'}"
  for variant in variants:
    (trial,) = optuna.load_study(study_name=f"rnn_vs_transformer/{variant}",
                                 storage=storage).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert 2_000 < trial.user_attrs["num_params"] < 4_000
    assert f"| {variant} | {trial.user_attrs['num_params']:,} |" in text
  headline = text.split("## Headline")[1].split("##")[0]
  assert all(f"| {b} |" in headline for b in ("gru", "mlp"))
  config = default_config()
  config.update(data="standard", data_path=path, data_dir=data_dir)
  opening = comparison.opening_frame(make_task(config))[0, 0]
  assert opening.sum() >= 3  # a chord of the training data, where untrained logits gave noise
  for backbone in ("gru", "mlp"):
    roll = samples.abc_to_roll((sweep_dir / "report" / f"chorale_{backbone}.abc").read_text())
    assert roll.shape == (comparison.SAMPLE_FRAMES, 88)
    np.testing.assert_array_equal(roll[0], opening)
  assert (sweep_dir / "report" / "chorales.png").stat().st_size > 0
  assert json.loads((sweep_dir / "report" / "summary.json").read_text())["best_trials"].keys() == \
      set(variants)
