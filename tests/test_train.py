"""One trial: a step changes every parameter, a trial learns and fills its workdir, a killed
trial resumes to the very result of an uninterrupted one, divergence is recorded, and a workdir
of another config is refused."""
import json
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tensorboard.backend.event_processing import event_accumulator

from rnn_research import event_files, metrics, train
from rnn_research.models import NextStepModel
from rnn_research.tasks import next_step


def small_config(fake_chorales, **overrides):
  config = train.default_config()
  config.data, (config.data_path, config.data_dir) = "standard", fake_chorales
  config.model.hidden_size = 16
  config.update(batch_size=1, eval_batch_size=8, max_epochs=6, patience=6, optimizer="adam",
                learning_rate=0.02, input_noise=0.05, pad_multiple=16)
  config.update(overrides)
  return config


def test_one_step_changes_every_parameter(fake_chorales):
  """Under jit, with dropout between layers: its random state lives in `other` and advances."""
  config = small_config(fake_chorales)
  config.model.update(num_layers=2, dropout=0.3)
  task = train.make_task(config)
  model = NextStepModel(config.model, 88, 88, rngs=nnx.Rngs(0))
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  tx = train.make_optimizer(config)
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
           "other": other}
  batch = task.eval_batches["validation"][0]
  step = jax.jit(lambda s: train.train_step(graphdef, tx, task.loss, s, batch,
                                            jax.random.key(0), 0.1))
  new_state, metrics = step(state)
  assert int(new_state["step"]) == 1 and np.isfinite(metrics["loss"])
  for before, after in zip(jax.tree.leaves(params), jax.tree.leaves(new_state["params"])):
    assert not np.allclose(before, after)
  assert jax.tree.leaves(new_state["other"]) != jax.tree.leaves(other)


def test_trial_learns_and_fills_its_workdir(fake_chorales, tmp_path):
  result = train.train_and_evaluate(small_config(fake_chorales), tmp_path)
  assert result["status"] == "completed"
  assert result["test_nll"] < 0.5 * result["baseline_nll"]  # the chords are predictable
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == list(range(1, 7))
  assert set(lines[0]) == {"epoch", "step", "train_loss", "valid_nll", "learning_rate",
                           "grad_norm", "param_norm", "wall_time"}
  assert min(l["valid_nll"] for l in lines) == result["valid_nll"]
  assert lines[result["best_epoch"] - 1]["valid_nll"] == result["valid_nll"]
  assert json.loads((tmp_path / "result.json").read_text()) == result
  assert (tmp_path / "checkpoints" / "best").is_dir() and (tmp_path / "checkpoints" / "latest").is_dir()
  # A finished workdir answers at once with the stored result.
  assert train.train_and_evaluate(small_config(fake_chorales), tmp_path) == result


RUN_TRIAL = """
import json, sys, ml_collections
from rnn_research import event_files, metrics, train
train.train_and_evaluate(ml_collections.ConfigDict(json.loads(sys.argv[1])), sys.argv[2])
"""


def test_killed_trial_resumes_to_the_same_result(fake_chorales, tmp_path):
  config = small_config(fake_chorales, max_epochs=8, patience=8)
  whole = train.train_and_evaluate(config, tmp_path / "whole")
  workdir = tmp_path / "killed"
  process = subprocess.Popen([sys.executable, "-c", RUN_TRIAL, config.to_json(), str(workdir)],
                             stderr=subprocess.DEVNULL)
  latest = workdir / "checkpoints" / "latest"
  deadline = time.time() + 300
  while not (latest.is_dir() and any(p.name.isdigit() and int(p.name) >= 2 for p in latest.iterdir())):
    assert process.poll() is None and time.time() < deadline, "the trial ended before the kill"
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (workdir / "result.json").exists()
  told = []  # every epoch once, those before the kill first
  [resumed] = train.train_pack([config], [workdir], on_epoch=lambda k, row: told.append(row))
  assert resumed == whole
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [row["epoch"] for row in rows] == list(range(1, 9)) and told == rows
  # TensorBoard drops what the killed run wrote after its checkpoint, as metrics.jsonl does.
  events = event_accumulator.EventAccumulator(str(workdir / event_files.SUBDIR))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars("valid_nll")] == [
      (row["epoch"], float(np.float32(row["valid_nll"]))) for row in rows]
  wall_times = [row["wall_time"] for row in rows]  # counted on from the checkpoint
  assert wall_times == sorted(wall_times)


def test_diverging_trial_is_recorded(fake_chorales, tmp_path):
  config = small_config(fake_chorales, optimizer="sgd_nesterov", learning_rate=1e38)
  result = train.train_and_evaluate(config, tmp_path)
  assert result["status"] == "diverged" and result["diverged_step"] >= 1
  assert "test_nll" not in result


def test_workdir_of_another_config_is_refused(fake_chorales, tmp_path):
  train.train_and_evaluate(small_config(fake_chorales, max_epochs=1), tmp_path)
  other = small_config(fake_chorales, max_epochs=1, learning_rate=0.01)
  other.model.hidden_size = 8
  with pytest.raises(ValueError, match=r"keys \['learning_rate', 'model.hidden_size'\] differ"):
    train.train_and_evaluate(other, tmp_path)
  assert train.train_and_evaluate(other, tmp_path, overwrite=True)["status"] == "completed"


def test_workdir_written_before_a_key_was_declared_is_the_same_config(fake_chorales, tmp_path):
  """A config.json without keys declared since (their defaults then applied) is not refused;
  it is rewritten with them."""
  config = small_config(fake_chorales, max_epochs=1)
  result = train.train_and_evaluate(config, tmp_path)
  stored = json.loads((tmp_path / "config.json").read_text())
  del stored["task_options"]["max_length"], stored["model"]["backend"], stored["tensorboard"]
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert train.train_and_evaluate(config, tmp_path) == result
  rewritten = json.loads((tmp_path / "config.json").read_text())
  assert rewritten["task_options"] == {"max_length": 0} and rewritten["tensorboard"] is True


@pytest.mark.parametrize("key, value, message", [
    ("data", "mnist", "data must be one of"),
    ("optimizer", "lbfgs", "optimizer must be one of"),
])
def test_bad_config_values(fake_chorales, tmp_path, key, value, message):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(small_config(fake_chorales, **{key: value}), tmp_path)


def test_max_length_cuts_every_split_to_its_first_steps(fake_chorales):
  """task_options.max_length keeps the first steps of every sequence (12 to 39 frames here) in
  training and evaluation; a bad value is refused naming the option."""
  whole = train.make_task(small_config(fake_chorales))
  cut = train.make_task(small_config(fake_chorales, task_options={"max_length": 20}))

  def examples(batches, max_length):  # each example's first max_length steps, in one order
    return sorted(b[key][i, :min(n, max_length)].tobytes() + b"|" + b"%d" % min(n, max_length)
                  for b in batches for i, n in enumerate(b["lengths"])
                  for key in ("inputs", "targets"))

  lengths = []
  for split, batches in whole.eval_batches.items():
    assert examples(cut.eval_batches[split], 10**6) == examples(batches, 20)
    assert all(not b["mask"][:, 20:].any() for b in cut.eval_batches[split])
    lengths += [n for b in batches for n in b["lengths"]]
  assert max(lengths) > 20 > min(lengths)
  example = cut.transform(cut.train[0])
  assert len(example["inputs"]) == len(example["targets"]) == min(20, len(cut.train[0]["roll"]))
  with pytest.raises(ValueError, match=r"task_options.max_length must be an int >= 0.*-1"):
    train.make_task(small_config(fake_chorales, task_options={"max_length": -1}))


def test_pack_equals_its_trials_trained_alone(fake_chorales, tmp_path):
  """A pack (one vmapped program) gives each trial the result it gets alone, given the same
  data order (the same seed); a diverging member leaves the others untouched."""
  configs = [small_config(fake_chorales, max_epochs=3, learning_rate=lr, input_noise=noise)
             for lr, noise in ((0.02, 0.05), (0.005, 0.3))]
  configs.append(small_config(fake_chorales, max_epochs=3, optimizer="adam", learning_rate=1e38))
  packed = train.train_pack(configs, [tmp_path / f"pack{k}" for k in range(3)])
  alone = [train.train_and_evaluate(c, tmp_path / f"alone{k}") for k, c in enumerate(configs[:2])]
  for p, a in zip(packed, alone):
    assert p.keys() == a.keys() and p["best_epoch"] == a["best_epoch"]
    for key in ("valid_nll", "test_nll"):
      assert abs(p[key] - a[key]) < 1e-5 * a[key]
  assert packed[2]["status"] == "diverged"


def test_pack_members_must_share_their_shapes(fake_chorales, tmp_path):
  other = small_config(fake_chorales)
  other.model.hidden_size = 8
  with pytest.raises(ValueError, match=r"may differ only in .*keys \['model.hidden_size'\] differ"):
    train.train_pack([small_config(fake_chorales), other], [tmp_path / "a", tmp_path / "b"])


def test_character_head_learns_a_repeating_text():
  """The softmax head on embedded token ids: a few updates on "abcabc..." cut the loss, and
  the metric counts only the unmasked characters."""
  config = train.default_config()
  config.model.hidden_size = 16
  config.update(optimizer="adam", learning_rate=0.05)
  model = NextStepModel(config.model, 5, 5, embed=True, rngs=nnx.Rngs(0))
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  tx = train.make_optimizer(config)
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
           "other": other}
  ids = jnp.array([[(t % 3) + 1 for t in range(13)]] * 2, jnp.int32)
  mask = jnp.arange(12)[None, :] < jnp.array([[12], [7]])
  batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:], "lengths": jnp.array([12, 7]),
           "mask": mask}
  step = jax.jit(lambda s: train.train_step(graphdef, tx, next_step.character_loss, s, batch,
                                            jax.random.key(0), 0.0))
  state, first = step(state)
  for _ in range(40):
    state, last = step(state)
  assert last["loss"] < 0.1 * first["loss"]
  logits = nnx.merge(graphdef, state["params"], other)(batch["inputs"], batch["lengths"])
  _, count = metrics.character_nll(logits, batch["targets"], mask)
  assert int(count) == 19


def test_piano_roll_nll_skips_first_frames_and_padding(rng):
  logits = rng.standard_normal((2, 5, 88))
  targets = (rng.random((2, 5, 88)) < 0.1).astype(np.float64)
  lengths = np.array([5, 3])
  mask = metrics.scored_frames(jnp.arange(5)[None, :] < jnp.asarray(lengths)[:, None])
  total, count = metrics.piano_roll_nll(jnp.asarray(logits), jnp.asarray(targets), mask)
  p = 1 / (1 + np.exp(-logits))
  nll = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(-1)
  expected = sum(nll[b, 1:n].sum() for b, n in enumerate(lengths))
  assert int(count) == 4 + 2 and abs(float(total) - expected) < 1e-9 * expected



@pytest.mark.parametrize("name, tfds_name, suffix", [
    ("jsb_standard", "jsb_chorales/standard", ".mat"), ("nottingham", "nottingham", ".pickle"),
    ("muse_data", "muse_data", ".mat"), ("piano_midi_de", "piano_midi_de", ".pickle")])
def test_trains_on_each_polyphonic_set_by_name(fake_chorales, tmp_path, name, tfds_name, suffix):
  """Each Boulanger-Lewandowski set trains by name from the user's file, in either format, and
  is kept under its own TFDS name: another set built in the same data dir stays as it was."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.data import piano_roll  # pylint: disable=g-import-not-at-top
  from test_data_polyphonic import write_mat, write_pickle  # pylint: disable=g-import-not-at-top
  rolls = piano_roll.read_polyphonic_file(fake_chorales[0])
  path = tmp_path / f"set{suffix}"
  (write_mat if suffix == ".mat" else write_pickle)(
      path, {split: [r[:9] for r in rs] for split, rs in rolls.items()})  # 9 frames each
  data_dir = tmp_path / "tfds"
  other = "muse_data" if name == "nottingham" else "nottingham"
  data.load(other, "train", data_dir=data_dir, path=fake_chorales[0])  # whole sequences
  config = small_config(fake_chorales, data=name, data_path=str(path), data_dir=str(data_dir),
                        max_epochs=1)
  result = train.train_and_evaluate(config, tmp_path / "trial")
  assert result["status"] == "completed" and np.isfinite(result["test_nll"])
  assert next_step.DATASETS[name][0] == tfds_name
  assert {len(ex["roll"]) for ex in data.load(tfds_name, "train", data_dir=data_dir)} == {9}
  assert min(len(ex["roll"]) for ex in data.load(other, "train", data_dir=data_dir)) >= 12
