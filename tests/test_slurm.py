"""SLURM sweeps on a real one-node cluster and PostgreSQL server on this machine
(scripts/services.sh): two array tasks share one study, one is killed mid-trial, and every
trial finishes exactly once, the killed one resumed from its checkpoint by the other task; bad
input is refused before anything is submitted. Skipped, with the reason, where the services
cannot run (not root, no apt-get). And, without a cluster, the heartbeats that tell a dead
worker's trials from a live one's."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest

ROOT = pathlib.Path(__file__).parents[1]


def _squeue(env) -> str:
  return subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True,
                        text=True, check=True).stdout


@pytest.fixture(scope="module")
def services():
  """The environment (SLURM_CONF, partition, a fresh database's URL) for the test's processes;
  stops at the end what it started."""
  run = subprocess.run(["bash", "scripts/services.sh", "start"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
  if run.returncode:
    pytest.skip(f"scripts/services.sh start failed: {run.stderr.strip()}")
  found = dict(line.split("=", 1) for line in run.stdout.split())
  import sqlalchemy  # pylint: disable=g-import-not-at-top
  server = sqlalchemy.create_engine(found["RNN_RESEARCH_DATABASE"], isolation_level="AUTOCOMMIT")
  database = f"test_{uuid.uuid4().hex[:12]}"
  with server.connect() as connection:
    connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
  env = dict(os.environ, SLURM_CONF=found["SLURM_CONF"])
  yield {"env": env, "partition": found["RNN_RESEARCH_PARTITION"],
         "url": found["RNN_RESEARCH_DATABASE"].rsplit("/", 1)[0] + f"/{database}"}
  with server.connect() as connection:
    connection.execute(sqlalchemy.text(f"DROP DATABASE {database} WITH (FORCE)"))
  server.dispose()
  if found["STARTED"]:
    subprocess.run(["bash", "scripts/services.sh", "stop", found["STARTED"]], cwd=ROOT,
                   check=True, timeout=120)


def command(sweep_dir, fake_chorales, partition, url, *extra):
  path, data_dir = fake_chorales
  return [sys.executable, "-m", "launch.slurm", "--study=experiments/odyssey.py:smoke",
          f"--partition={partition}", f"--storage={url}", f"--sweep_dir={sweep_dir}",
          "--config.data=standard", f"--config.data_path={path}", f"--config.data_dir={data_dir}",
          "--config.variants=('V',)", "--config.trials_per_variant=2", "--config.pack_size=1",
          *extra]


def _owner(slurm_dir: pathlib.Path, number: int) -> str | None:
  """The array task (job_task) whose log says it trains trial `number`."""
  for log in slurm_dir.glob("*_log.out"):
    if re.search(rf"^worker \d+: V trial {number} ", log.read_text(), re.MULTILINE):
      return "_".join(log.name.split("_")[:2])
  return None


def _worker_pids(task: str, env) -> list[int]:
  """The processes of the worker (step 0) of an array task "<array job>_<index>"."""
  job = subprocess.run(["squeue", "-h", "-o", "%A", "-j", task], env=env, capture_output=True,
                       text=True, check=True).stdout.split()[0]
  listed = subprocess.run(["scontrol", "listpids", f"{job}.0"], env=env, capture_output=True,
                          text=True, check=True).stdout
  return [int(line.split()[0]) for line in listed.splitlines()[1:]]


def _kill_a_task_mid_trial(sweep_dir, launcher, env) -> int:
  """SIGKILLs the worker of the task that trains a trial with an epoch's checkpoint but no
  result (stopping it first, then checking that the trial is still unfinished); returns the
  trial's number."""
  deadline = time.time() + 600
  while True:
    assert launcher.poll() is None and time.time() < deadline, "the sweep ended before the kill"
    for workdir in sweep_dir.glob("trials/V/*"):
      number = int(workdir.name)
      task = _owner(sweep_dir / "slurm", number)
      latest = workdir / "checkpoints" / "latest"
      if task and latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
        pids = _worker_pids(task, env)
        for pid in pids:
          os.kill(pid, signal.SIGSTOP)
        unfinished = not (workdir / "result.json").exists()
        for pid in pids:
          os.kill(pid, signal.SIGKILL if unfinished else signal.SIGCONT)
        if unfinished:
          return number
    time.sleep(0.05)


def test_two_tasks_one_killed_finish_every_trial_once(services, fake_chorales, tmp_path):
  sweep_dir = tmp_path / "sweep"
  with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
    launcher = subprocess.Popen(
        command(sweep_dir, fake_chorales, services["partition"], services["url"], "--array=2",
                "--heartbeat=1", "--wait", "--noreport"),
        cwd=ROOT, env=services["env"], stdout=out, stderr=err)
    killed = _kill_a_task_mid_trial(sweep_dir, launcher, services["env"])
    launcher.wait(timeout=600)
  assert launcher.returncode == 0, (tmp_path / "err").read_text()[-3000:]
  assert "2/2 trials done" in (tmp_path / "out").read_text()

  trials = optuna.load_study(study_name="odyssey/V", storage=services["url"]).get_trials()
  state = optuna.trial.TrialState
  done = [t for t in trials if t.state == state.COMPLETE or t.user_attrs.get("status")]
  assert len(done) == 2 and len({t.user_attrs["workdir"] for t in done}) == 2
  assert not [t for t in trials if t.state in (state.RUNNING, state.WAITING)]
  # The killed trial failed and was retried once, in its workdir, from its checkpoint.
  failed = [t for t in trials if t.state == state.FAIL and not t.user_attrs.get("status")]
  assert [t.number for t in failed] == [killed]
  retry = [t for t in done if t.user_attrs.get("retry_of") == killed]
  assert len(retry) == 1 and retry[0].user_attrs["workdir"] == failed[0].user_attrs["workdir"]
  workdir = sweep_dir / retry[0].user_attrs["workdir"]
  logs = "".join(p.read_text() for p in (sweep_dir / "slurm").glob("*_log.err"))
  assert f"{workdir}: resumed after epoch" in logs
  for trial in done:
    lines = (sweep_dir / trial.user_attrs["workdir"] / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == list(range(1, len(epochs) + 1))
  assert not _squeue(services["env"]).strip()


def test_unknown_partition_is_refused_before_anything_is_written(services, fake_chorales,
                                                                 tmp_path):
  before = _squeue(services["env"])
  run = subprocess.run(command(tmp_path / "sweep", fake_chorales, "nosuch", services["url"]),
                       cwd=ROOT, env=services["env"], capture_output=True, text=True, timeout=300)
  assert run.returncode != 0 and "partition 'nosuch' does not exist" in run.stderr
  assert "the cluster has ['debug']" in run.stderr
  assert not (tmp_path / "sweep").exists() and _squeue(services["env"]) == before


def test_unreachable_scheduler_or_database_and_unsplittable_batch(services, fake_chorales,
                                                                  tmp_path, monkeypatch):
  from launch import slurm, study  # pylint: disable=g-import-not-at-top  (absl flags)
  from experiments import odyssey  # pylint: disable=g-import-not-at-top
  config = odyssey.get_config("smoke")
  monkeypatch.setenv("SLURM_CONF", services["env"]["SLURM_CONF"])
  slurm.check_request(services["partition"], 1, 0, config)  # one CPU device per task
  with pytest.raises(ValueError, match=r"batch_size=1 cannot be split over 2 devices"):
    slurm.check_request(services["partition"], 1, 4, config)  # 4 GPUs, packs of 2
  url = "postgresql://nobody@127.0.0.1:9/none"
  with pytest.raises(ValueError, match=f"cannot open the study database {url!r}"):
    study.open_storage(url)
  # A controller on a port where none listens, given up on after a second.
  conf = pathlib.Path(services["env"]["SLURM_CONF"]).read_text()
  bogus_conf = tmp_path / "nowhere.conf"
  bogus_conf.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=9", conf)
                        + "MessageTimeout=1\n")
  monkeypatch.setenv("SLURM_CONF", str(bogus_conf))
  with pytest.raises(ValueError, match="cannot reach the SLURM scheduler: sinfo says"):
    slurm.check_request(services["partition"], 1, 0, config)
  monkeypatch.setenv("PATH", "/nonexistent")
  with pytest.raises(ValueError, match="no SLURM scheduler here: sinfo is not on PATH"):
    slurm.partitions()


def test_heartbeats_retry_only_the_trials_of_dead_workers(tmp_path):
  """No cluster needed: with a heartbeat every second (stale after 3), a claimed trial whose
  worker beats stays RUNNING; a RUNNING trial that no worker beats for (left by a run without
  heartbeats, adopted by a starting worker) comes back once with its params, workdir and seed;
  the quota holds."""
  from launch import study as studies  # pylint: disable=g-import-not-at-top
  from rnn_research.declaration import Param, Study  # pylint: disable=g-import-not-at-top
  declared = Study(name="test", data="none", variants={"V": {}}, baseline="V",
                   space={"x": Param("linear", 0.0, 1.0)})
  url = f"sqlite:///{tmp_path / 'study.db'}"
  storage = studies.open_storage(url, heartbeat=1, max_retries=3)
  study = studies.open_study(storage, declared, "V")
  space = declared.distributions()
  lock = lambda: studies.claim_lock(url, tmp_path, study.study_name)
  claim = lambda: studies.claim_trials(study, 3, space, lock(), max_retries=3)
  orphan = studies.open_study(studies.open_storage(url), declared, "V").ask(space)  # no beats
  orphan.set_user_attr("workdir", "trials/V/0000")
  orphan.set_user_attr("seed", 7)
  studies.adopt_running(storage, study)
  live = claim()
  with studies.heartbeats(storage, live):
    time.sleep(4.5)
    retry = claim()
    assert len(retry) == 1 and retry[0].params == orphan.params
    assert retry[0].user_attrs == {"workdir": "trials/V/0000", "seed": 7,
                                   "retry_of": orphan.number, "retries": 1}
    assert len(claim()) == 1  # the third trial
    assert not claim()
  states = {t.number: t.state for t in study.get_trials()}
  state = optuna.trial.TrialState
  assert states[orphan.number] == state.FAIL and states[live[0].number] == state.RUNNING
  assert list(states.values()).count(state.RUNNING) == 3
