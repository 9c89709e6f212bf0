"""The polyphonic recipes: trial configs (size, the dropout that acts, the TCN's reach), the
read-out's dropout, and the search -> fresh seeds -> table pipeline end to end on small data."""
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

from experiments import polyphonic
from experiments import rnn_vs_transformer as comparison
from launch import reseed
from rnn_research.analysis import records
from rnn_research.backbones.sizing import count_params
from rnn_research.models import NextStepModel

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.parametrize("variant, dropout_key", [("lstm_NP", "output_dropout"),
                                                  ("tcn", "dropout"),
                                                  ("transformer", "dropout")])
def test_trial_configs_meet_the_size_and_set_a_dropout_that_acts(variant, dropout_key):
  config = polyphonic.get_config()
  params = {"learning_rate": 1e-3, "dropout": 0.3, "size": 30_000}
  trial = polyphonic.trial_config(config, variant, params, seed=5)
  assert (trial.seed, trial.learning_rate, trial.model[dropout_key]) == (5, 1e-3, 0.3)
  assert trial.model.get("dropout", 0.0) == (0.3 if dropout_key == "dropout" else 0.0)
  count = count_params(lambda: NextStepModel(trial.model, 88, 88, rngs=nnx.Rngs(0)))
  assert abs(count - 30_000) < 0.1 * 30_000
  if variant == "tcn":  # its receptive field covers the longest chorale, one block fewer not
    reach = lambda blocks: 1 + 2 * (trial.model.kernel_size - 1) * (2 ** blocks - 1)
    assert reach(trial.model.num_layers) >= comparison.JSB_MAX_LENGTH
    assert reach(trial.model.num_layers - 1) < comparison.JSB_MAX_LENGTH


def test_output_dropout_drops_the_read_outs_inputs_in_training_only():
  config = ml_collections.ConfigDict(dict(backbone="lstm", variant="NP", hidden_size=16,
                                          num_layers=1, dropout=0.0, backend="scan"))
  inputs = jax.random.bernoulli(jax.random.key(0), 0.2, (3, 9, 88)).astype(jnp.float32)
  lengths = jnp.array([9, 5, 7])
  plain = NextStepModel(config, 88, 88, rngs=nnx.Rngs(0))
  dropped = NextStepModel(config, 88, 88, output_dropout=0.5, rngs=nnx.Rngs(0))
  nnx.update(dropped, nnx.state(plain, nnx.Param))  # the same weights
  assert not np.allclose(dropped(inputs, lengths), plain(inputs, lengths))
  dropped.eval()
  np.testing.assert_allclose(dropped(inputs, lengths), plain(inputs, lengths), rtol=1e-6)
  with pytest.raises(ValueError, match="output_dropout must be in"):
    NextStepModel(config, 88, 88, output_dropout=1.0, rngs=nnx.Rngs(0))


def _summary(variant: str, mean: float) -> dict:
  result = {"status": "completed", "test_nll": mean, "best_epoch": 40, "epochs": 60}
  return {"trial": 3, "params": {"learning_rate": 1e-3, "dropout": 0.2, "size": 20_000},
          "valid": 8.6, "test": 8.5, "num_params": 21_000, "completed": 2, "mean": mean,
          "std": 0.05, "seeds": {"1000": result, "1001": result}}


def test_table_sets_each_backbone_beside_its_published_figure(tmp_path):
  sweep_dir = tmp_path / "sweep"
  sweep_dir.mkdir()
  config = polyphonic.get_config().to_dict()  # the search's: on the standard JSB file
  (sweep_dir / "sweep.json").write_text(json.dumps({"study": "experiments/polyphonic.py",
                                                    "config": config}))
  reseeded = {"metric": "test_nll", "first_seed": 1000, "seeds": 2,
              "variants": {"gru": _summary("gru", 8.31), "mlp": _summary("mlp", 9.02)}}
  seed_dir = sweep_dir / "reseed" / "gru" / "1001"
  seed_dir.mkdir(parents=True)
  (seed_dir / "metrics.jsonl").write_text(
      "".join(json.dumps({"epoch": e, "wall_time": 75.0 * e}) + "\n" for e in (1, 2)))
  table = polyphonic.write_table(reseeded, str(sweep_dir), str(tmp_path / "out")).read_text()
  rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("|")}
  assert "**8.31** ± 0.05" in rows["gru"] and "| 8.54 |" in rows["gru"]  # Chung et al.'s GRU
  assert "| 8.43 |" in rows["gru"] and "| 8.10 |" not in rows["gru"]  # Bai et al.'s GRU, not TCN
  assert "| -0.12 |" in rows["gru"]  # 8.31 - 8.43, the lowest published GRU
  assert "40/60, 40/60 | –, 2 |" in rows["gru"]  # seed 1000 has no metrics; 1001 trained 150 s
  assert "| – | – | – | – |" in rows["mlp"]  # no published figure for the MLP
  assert "| nottingham | muse_data | piano_midi_de |" in table  # the sets not run here
  assert "| 3.07 |" in rows[f"{polyphonic.BAI}: tcn"]
  assert json.loads((tmp_path / "out" / "table.json").read_text())["data"] == \
      "jsb_chorales/standard"


def test_search_then_fresh_seeds_of_the_best_trial(fake_chorales, tmp_path):
  path, data_dir = fake_chorales
  sweep_dir = tmp_path / "sweep"
  run = subprocess.run(
      [sys.executable, "-m", "launch.local", "--study=experiments/polyphonic.py:smoke",
       "--workers=1", f"--sweep_dir={sweep_dir}", "--config.data=jsb_standard",
       f"--config.data_path={path}", f"--config.data_dir={data_dir}",
       "--config.variants=('mlp',)", "--config.trials_per_variant=2",
       "--config.trial.max_epochs=1", "--config.trial.length_buckets=0",
       "--config.trial.pad_multiple=40"],  # the fake chorales are short: one shape to compile
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  trials = records.load_trials(str(sweep_dir), records.load_study(str(sweep_dir)))
  best = min(trials, key=lambda t: t.valid_metric)
  summary = reseed.reseed(str(sweep_dir), seeds=2, workers=1)
  entry = summary["variants"]["mlp"]
  assert (entry["trial"], entry["params"]) == (best.number, best.params)
  assert set(entry["seeds"]) == {"1000", "1001"} and entry["completed"] == 2
  values = [r["test_nll"] for r in entry["seeds"].values()]
  assert values[0] != values[1]  # fresh seeds: other initialisations and data orders
  assert entry["mean"] == pytest.approx(np.mean(values))
  assert entry["std"] == pytest.approx(np.std(values, ddof=1))
  chosen = json.loads((sweep_dir / best.workdir / "config.json").read_text())
  for seed in (1000, 1001):
    run_config = json.loads((sweep_dir / "reseed" / "mlp" / str(seed) / "config.json").read_text())
    assert run_config == {**chosen, "seed": seed}
  result_file = sweep_dir / "reseed" / "mlp" / "1000" / "result.json"
  written = result_file.stat().st_mtime_ns
  assert reseed.reseed(str(sweep_dir), seeds=2, workers=1) == summary  # read back, not retrained
  assert result_file.stat().st_mtime_ns == written
  with pytest.raises(ValueError, match="seeds must be a positive int"):
    reseed.reseed(str(sweep_dir), seeds=0, workers=1)


def test_the_comparison_trains_jsb_as_the_recipes():
  recipe = polyphonic.get_config().trial
  for arg in (None, "cpu"):
    config = comparison.get_config(arg)
    trial = comparison.trial_config(config, "jsb-lstm_V-50k",
                                    {"learning_rate": 1e-3, "dropout": 0.0}, seed=0)
    keys = ("optimizer", "data_path", *comparison.JSB_TRAINING)
    assert {k: trial[k] for k in keys} == {k: recipe[k] for k in keys}
  assert polyphonic.SPACE["learning_rate"] == comparison.SPACE["learning_rate"]
