"""Data parallelism (rnn_research.parallel): the mesh a pack trains on, the batch sizes it
refuses, and a pack trained on 8 (forced host) devices, its batch and trial axes sharded,
killed after an epoch and resumed on 2 devices, equal to the same pack on 1 device."""
import json
import os
import subprocess
import sys

import pytest

from rnn_research import parallel, train
from test_train import small_config


@pytest.mark.parametrize("devices, trials", [(8, 2), (8, 3), (8, 8), (6, 4), (1, 5), (4, 12)])
def test_mesh_runs_as_many_trials_side_by_side_as_divide_both(devices, trials):
  t, d = parallel.mesh_shape(devices, trials)
  assert t * d == devices and trials % t == 0
  assert all(trials % bigger or devices % bigger for bigger in range(t + 1, devices + 1))
  assert parallel.mesh_shape(devices, trials, num_processes=2) == (1, devices)


def test_batch_the_data_axis_cannot_split_is_refused():
  parallel.check_batch(4, num_devices=8, num_trials=2)  # 2 trial groups x 4 batch slices
  with pytest.raises(ValueError, match=r"batch_size=2 cannot be split over 4 devices"):
    parallel.check_batch(2, num_devices=8, num_trials=2)
  with pytest.raises(ValueError, match=r"batch_size=4 cannot be split over 8 devices"):
    parallel.check_batch(4, num_devices=8, num_trials=2, num_processes=2)  # 2 hosts x 4


TRAIN = """
import json, os, sys, jax, ml_collections
from rnn_research import checkpoint, parallel, train
configs = [ml_collections.ConfigDict(c) for c in json.loads(sys.argv[1])]
crash_after = int(sys.argv[3])
save = checkpoint.Checkpoints.save
def save_then_crash(self, kind, epoch, state, meta):  # a kill right after a checkpoint
  save(self, kind, epoch, state, meta)
  if kind == "latest" and epoch == crash_after:
    print(json.dumps({"mesh": dict(parallel.pack_mesh(len(configs)).shape)}), flush=True)
    os._exit(3)
checkpoint.Checkpoints.save = save_then_crash
results = train.train_pack(configs, [f"{sys.argv[2]}/{k}" for k in range(len(configs))])
print(json.dumps({"mesh": dict(parallel.pack_mesh(len(configs)).shape), "results": results}))
"""


def _train(configs, workdir, devices: int, crash_after: int = 0):
  args = json.dumps([json.loads(c.to_json()) for c in configs])
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen([sys.executable, "-c", TRAIN, args, str(workdir), str(crash_after)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _output(process: subprocess.Popen) -> dict:
  """The JSON line the process printed last."""
  out, err = process.communicate(timeout=600)
  lines = [line for line in out.splitlines() if line.startswith("{")]
  assert lines, err[-3000:]
  return json.loads(lines[-1])


def _curves(workdir) -> list[tuple[float, float]]:
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == list(range(1, len(lines) + 1))
  return [(l["train_loss"], l["valid_nll"]) for l in lines]


def _close(a: float, b: float) -> bool:
  return abs(a - b) <= 1e-5 * abs(b)


def test_pack_on_8_devices_resumed_on_2_equals_1_device(fake_chorales, tmp_path):
  """Batches of 4 over 4 devices times 2 trial groups; validation batches of 4 (sharded) and
  2 (replicated); the checkpoint of the 8-device run restores onto 2 devices."""
  configs = [small_config(fake_chorales, max_epochs=2, patience=2, batch_size=4,
                          eval_batch_size=4, pad_multiple=64, learning_rate=lr)
             for lr in (0.02, 0.01)]
  train.make_task(configs[0])  # builds the data once, before two processes read it at once
  reference = _train(configs, tmp_path / "one", 1)
  crashed = _output(_train(configs, tmp_path / "many", 8, crash_after=1))
  assert crashed["mesh"] == {"trials": 2, "data": 4} and "results" not in crashed
  resumed = _output(_train(configs, tmp_path / "many", 2))
  assert resumed["mesh"] == {"trials": 2, "data": 1}
  reference = _output(reference)
  for k, (one, many) in enumerate(zip(reference["results"], resumed["results"])):
    assert one["epochs"] == many["epochs"] == 2 and one["best_epoch"] == many["best_epoch"]
    assert _close(many["valid_nll"], one["valid_nll"]) and _close(many["test_nll"], one["test_nll"])
    curves = zip(_curves(tmp_path / "many" / str(k)), _curves(tmp_path / "one" / str(k)))
    assert all(_close(a, b) for pair in curves for a, b in zip(*pair))
