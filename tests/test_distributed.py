"""Several processes as one JAX program (rnn_research.parallel.initialize, launch.distributed):
two processes on this machine, 2 CPU devices each, joined from SLURM's variables, run a sweep
worker that trains its trial data parallel over the 4 devices; its loss curve equals one
process on one device. Arguments that cannot join are refused."""
import json
import os
import random
import subprocess
import sys

import pytest

from rnn_research import parallel


@pytest.mark.parametrize("kwargs, message", [
    (dict(coordinator_address="localhost:1234"), "go together"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2),
     r"process_id must be in \[0, 2\), got 2"),
])
def test_incomplete_or_wrong_coordinates_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    parallel.initialize(**kwargs)


def test_one_process_joins_nothing(monkeypatch):
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "localhost")
  assert parallel.initialize() == 1
  assert parallel.initialize("localhost:1234", 1, 0) == 1


def _worker(sweep_dir, fake_chorales, rank: int, job_id: int) -> subprocess.Popen:
  """Task `rank` of a 2-task SLURM step on localhost, each task with 2 CPU devices."""
  path, data_dir = fake_chorales
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
             SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
  return subprocess.Popen(
      [sys.executable, "-m", "launch.distributed", "--study=experiments/odyssey.py:smoke",
       f"--sweep_dir={sweep_dir}", "--heartbeat=5", "--config.data=standard",
       f"--config.data_path={path}", f"--config.data_dir={data_dir}", "--config.variants=('V',)",
       "--config.trials_per_variant=1", "--config.pack_size=1", "--config.trial.max_epochs=2",
       "--config.trial.batch_size=4", "--config.trial.eval_batch_size=4"],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


ALONE = """
import json, sys, ml_collections
from rnn_research import train
config = ml_collections.ConfigDict(json.load(open(sys.argv[1])))
print(json.dumps(train.train_and_evaluate(config, sys.argv[2])))
"""


def _curve(workdir) -> list[tuple[float, float]]:
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == list(range(1, len(lines) + 1))
  return [(l["train_loss"], l["valid_nll"]) for l in lines]


def test_two_processes_train_as_one(fake_chorales, tmp_path):
  sweep_dir = tmp_path / "sweep"
  job_id = random.randrange(4096)  # JAX's coordinator port follows from the job id
  workers = [_worker(sweep_dir, fake_chorales, rank, job_id) for rank in (0, 1)]
  outputs = [w.communicate(timeout=600) for w in workers]
  for worker, (_, err) in zip(workers, outputs):
    assert worker.returncode == 0, err[-3000:]
  assert "trained 1 trials; 1 done" in outputs[0][0]
  assert "worker 0: V trial 0" in outputs[1][0]  # process 1 trained it too
  workdir = sweep_dir / "trials" / "V" / "0000"
  result = json.loads((workdir / "result.json").read_text())

  alone = subprocess.run([sys.executable, "-c", ALONE, str(workdir / "config.json"),
                          str(tmp_path / "alone")], capture_output=True, text=True, timeout=600)
  assert alone.returncode == 0, alone.stderr[-3000:]
  reference = json.loads(alone.stdout.strip().splitlines()[-1])
  for key in ("valid_nll", "test_nll"):
    assert abs(result[key] - reference[key]) <= 1e-5 * reference[key]
  curves = _curve(workdir), _curve(tmp_path / "alone")
  assert len(curves[0]) == len(curves[1]) == 2
  for (loss, valid), (ref_loss, ref_valid) in zip(*curves):
    assert abs(loss - ref_loss) <= 1e-5 * ref_loss and abs(valid - ref_valid) <= 1e-5 * ref_valid
