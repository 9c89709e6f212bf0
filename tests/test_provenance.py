"""Provenance: env.json (git revision, packages, devices, command line, config) in every sweep
dir and trial workdir; the sampler seeded from the study config, so that a rerun of a sweep
samples the same trials; an old sweep.json without the seed still resumes; database URLs taken
from $RNN_RESEARCH_STORAGE and shown with their passwords masked."""
import importlib.metadata
import json
import os
import pathlib
import pickle
import subprocess
import sys

import jax
import optuna
import pytest

from launch import study as studies
from rnn_research import database, provenance
from rnn_research.declaration import Param, Study

ROOT = pathlib.Path(__file__).parents[1]
SECRET_URL = "postgresql://me:s3cret@127.0.0.1:9/none"  # nothing listens on port 9


def test_env_json_holds_one_record_per_run(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "argv", ["launch", f"--storage={SECRET_URL}", "--workers=2"])
  provenance.record(tmp_path, {"learning_rate": 0.1})
  provenance.record(tmp_path, {"learning_rate": 0.2})
  first, second = json.loads((tmp_path / provenance.ENV_FILE).read_text())
  assert (first["config"], second["config"]) == ({"learning_rate": 0.1}, {"learning_rate": 0.2})
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
  if head.returncode == 0:  # a checkout; an exported tree has no revision to compare with
    assert first["git"]["revision"] == head.stdout.strip()
    assert isinstance(first["git"]["dirty"], bool)
  assert first["packages"]["jax"] == importlib.metadata.version("jax")
  assert first["packages"]["optuna"] == importlib.metadata.version("optuna")
  assert first["jax"]["backend"] == jax.default_backend()
  assert len(first["jax"]["devices"]) == jax.device_count()
  assert first["command"] == ["launch", "--storage=postgresql://me:***@127.0.0.1:9/none",
                              "--workers=2"]


def test_a_benchmark_result_holds_its_environment(tmp_path):
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  common.write_json(tmp_path / "result.json", {"rows": [{"ms": 1.5}]}, {"batch": 2})
  result = json.loads((tmp_path / "result.json").read_text())
  assert result["rows"] == [{"ms": 1.5}] and result["env"]["config"] == {"batch": 2}
  assert result["env"]["packages"]["jax"] == importlib.metadata.version("jax")


def test_git_state_is_none_outside_a_work_tree_or_without_git(tmp_path, monkeypatch):
  assert provenance.git_state(tmp_path) is None
  state = provenance.git_state(ROOT / "rnn_research")
  if state is not None:
    assert pathlib.Path(state["root"]).resolve() == ROOT.resolve()
  monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
  assert provenance.git_state(ROOT) is None


def test_the_revision_is_only_that_of_the_checkout_the_code_runs_from(monkeypatch):
  # Installed into a folder of some other work tree, the package is not at that tree's root.
  monkeypatch.setattr(provenance, "CODE_ROOT", ROOT / "rnn_research")
  assert provenance.code_revision.__wrapped__() is None


@pytest.mark.parametrize("url, shown", [
    ("postgresql://me:s3cret@db:5432/odyssey", "postgresql://me:***@db:5432/odyssey"),
    ("mysql+pymysql://me:p%40ss@db/odyssey", "mysql+pymysql://me:***@db/odyssey"),
    ("postgresql://me@db/odyssey", "postgresql://me@db/odyssey"),
    ("sqlite:////tmp/sweep/study.db", "sqlite:////tmp/sweep/study.db"),
    ("not a url://me:s3cret@db", "not a url://***@db"),  # unparsable: all before the @ masked
    ("me:s3cret@db/odyssey", "***@db/odyssey"),
])
def test_urls_are_shown_with_their_password_masked(url, shown):
  assert database.masked(url) == shown
  if "://" in url:  # without, no database takes it: a run refuses it before writing anything
    assert database.masked_argument(f"--storage={url}") == f"--storage={shown}"
  assert database.masked_argument("--config.data_path=/data/a=b.mat") == (
      "--config.data_path=/data/a=b.mat")


def test_an_unreachable_database_is_named_without_its_password():
  with pytest.raises(ValueError, match="cannot open the study database") as error:
    studies.open_storage(SECRET_URL)
  assert "s3cret" not in str(error.value) and "me:***@127.0.0.1" in str(error.value)


def test_the_url_comes_from_the_flag_else_the_environment(monkeypatch):
  monkeypatch.delenv(database.ENVIRONMENT_VARIABLE, raising=False)
  assert database.given_url(None) is None
  monkeypatch.setenv(database.ENVIRONMENT_VARIABLE, SECRET_URL)
  assert database.given_url(None) == SECRET_URL
  assert database.given_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_slurm_task_reads_an_environment_url_instead_of_pickling_it(monkeypatch):
  from launch import slurm, worker  # pylint: disable=g-import-not-at-top  (absl flags)
  from rnn_research import parallel  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(database.ENVIRONMENT_VARIABLE, SECRET_URL)
  assert slurm.task_storage_url(None, SECRET_URL) is None
  assert slurm.task_storage_url(SECRET_URL, SECRET_URL) == SECRET_URL  # given on the command line
  monkeypatch.delenv(database.ENVIRONMENT_VARIABLE)
  assert slurm.task_storage_url(None, "sqlite:///s/study.db") == "sqlite:///s/study.db"

  task = slurm.SweepTask("/sweep", None, "/study.py", {"name": "x"}, heartbeat=60)
  assert b"s3cret" not in pickle.dumps(task)
  calls = []
  monkeypatch.setattr(parallel, "initialize", lambda: 1)
  monkeypatch.setattr(worker, "run_worker", lambda *args, **kwargs: calls.append(args[1]))
  with pytest.raises(ValueError, match=database.ENVIRONMENT_VARIABLE):
    task(0)
  monkeypatch.setenv(database.ENVIRONMENT_VARIABLE, SECRET_URL)
  task(0)
  assert calls == [SECRET_URL]


DECLARED = Study(name="s", data="none", variants={"V": {}, "NP": {}}, baseline="V",
                 space={"x": Param("linear", 0.0, 1.0), "n": Param("log_int", 1, 1000)})
SPACE = DECLARED.distributions()


def _sample(study, count: int) -> list[dict]:
  return [study.ask(SPACE).params for _ in range(count)]


def open_study(storage, variant: str, seed: int) -> optuna.Study:
  return studies.open_study(storage, DECLARED, variant, seed=seed)


def test_each_trial_is_sampled_from_the_seed_study_and_number_alone():
  alone = open_study(optuna.storages.InMemoryStorage(), "V", 7)
  expected = _sample(alone, 4)
  # Two workers sharing one study claim its trials in turn: each samples what one worker would.
  storage = optuna.storages.InMemoryStorage()
  workers = [open_study(storage, "V", 7) for _ in range(2)]
  shared = [workers[k % 2].ask(SPACE).params for k in range(4)]
  assert shared == expected
  assert len({p["x"] for p in expected}) == 4  # trials differ from each other
  other_seed = _sample(open_study(optuna.storages.InMemoryStorage(), "V", 8), 4)
  other_variant = _sample(open_study(optuna.storages.InMemoryStorage(), "NP", 7), 4)
  assert other_seed != expected and other_variant != expected


def _sweep_config(fake_chorales, **overrides):
  from experiments import odyssey  # pylint: disable=g-import-not-at-top
  path, data_dir = fake_chorales
  config = odyssey.get_config("smoke")
  config.unlock()
  config.update(data="standard", data_path=path, data_dir=data_dir, variants=("V",), **overrides)
  return config


def test_an_old_sweep_json_without_a_seed_resumes(fake_chorales, tmp_path, monkeypatch):
  from launch import sweep  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv(database.ENVIRONMENT_VARIABLE, raising=False)
  study = str(ROOT / "experiments" / "odyssey.py")
  sweep_dir = tmp_path / "sweep"
  prepare = lambda config: sweep.prepare(sweep.check(config, f"{study}:smoke", str(sweep_dir),
                                                     None, False))
  prepare(_sweep_config(fake_chorales))
  record = json.loads((sweep_dir / "sweep.json").read_text())
  assert record["config"]["seed"] == 0
  del record["config"]["seed"]  # as written before the sampler had a seed
  (sweep_dir / "sweep.json").write_text(json.dumps(record))
  prepare(_sweep_config(fake_chorales))
  assert json.loads((sweep_dir / "sweep.json").read_text())["config"]["seed"] == 0
  with pytest.raises(ValueError, match=r"keys \['config.seed'\] differ"):
    prepare(_sweep_config(fake_chorales, seed=1))
  runs = json.loads((sweep_dir / provenance.ENV_FILE).read_text())
  assert len(runs) == 2 and runs[0]["config"] == {**record, "config": {**record["config"],
                                                                        "seed": 0}}
  assert runs[0]["jax"] is None  # the launcher leaves the devices to its workers
  assert runs[0]["storage"] == f"sqlite:///{sweep_dir.absolute() / 'study.db'}"


def _run_sweep(sweep_dir, fake_chorales, env) -> None:
  path, data_dir = fake_chorales
  subprocess.run(
      [sys.executable, "-m", "launch.local", "--study=experiments/odyssey.py:smoke",
       "--workers=1", f"--sweep_dir={sweep_dir}", "--config.data=standard",
       f"--config.data_path={path}", f"--config.data_dir={data_dir}", "--config.variants=('V',)",
       "--config.trials_per_variant=2", "--config.trial.max_epochs=1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=True)


def _sampled(url: str) -> dict[int, dict]:
  trials = optuna.load_study(study_name="odyssey/V", storage=url).get_trials()
  return {t.number: t.params for t in trials}


def test_a_rerun_samples_the_same_trials_and_records_its_environment(fake_chorales, tmp_path):
  first, second = tmp_path / "first", tmp_path / "second"
  env = {k: v for k, v in os.environ.items() if k != database.ENVIRONMENT_VARIABLE}
  _run_sweep(first, fake_chorales, env)
  elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
  _run_sweep(second, fake_chorales, {**env, database.ENVIRONMENT_VARIABLE: elsewhere})
  assert not (second / "study.db").exists()  # the environment's database was used

  sampled = _sampled(f"sqlite:///{first / 'study.db'}")
  assert len(sampled) == 2 and _sampled(elsewhere) == sampled
  assert [run["storage"] for run in json.loads((second / "env.json").read_text())] == [elsewhere]
  workdirs = sorted(first.glob("trials/V/*"))
  assert len(workdirs) == 2
  for workdir in workdirs:
    [run] = json.loads((workdir / "env.json").read_text())
    assert run["config"] == json.loads((workdir / "config.json").read_text())
    assert "--workers=1" in run["command"]  # the launcher's, which spawned the worker
    assert len(run["jax"]["devices"]) >= 1 and run["packages"]["flax"]
