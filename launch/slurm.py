"""Runs a sweep on a SLURM cluster: a job array of K tasks (submitit), each a worker that pulls
trials from the sweep's studies in a shared database and trains them in workdirs on shared
storage.

    python -m launch.slurm --study=experiments/odyssey.py --array=32 --partition=gpu \
        --gpus_per_task=1 --storage=postgresql://user:password@dbhost/odyssey \
        --sweep_dir=/shared/sweeps/odyssey --config.data=standard \
        --config.data_path=/shared/data/JSB_Chorales.mat

The database must be one every node reaches (PostgreSQL or MySQL; SQLite, the default, only
when every task runs on this machine) and the sweep dir on storage every node shares. Workers
send heartbeats (--heartbeat seconds): a task that dies (node failure, scancel) leaves its trial
to the others, which retry it from its checkpoint once its heartbeat is 3 heartbeats old. A task
that SLURM preempts or times out requeues itself (submitit) and goes on likewise. Running the
command again adds workers to the same sweep. --nodes_per_task=N makes each task one JAX program
over N nodes (one process per node) that trains each pack data parallel over all their devices.

With --wait the command stays until the array has left the queue, then writes the report;
without, it prints the job id, and `python -m rnn_research.analysis.report --sweep_dir=...
--storage=...` writes the report once the trials are done. Task logs: <sweep_dir>/slurm/.
Bad input (no reachable scheduler or database, an unknown partition, a batch the devices of a
task cannot split, and what launch.local refuses) stops the command in one line before anything
is written or submitted; --dry_run checks and prints the plan (for a run-time estimate, run
launch.local --dry_run on a machine like the tasks').
"""
import shutil
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from launch import cli
from launch.sweep import check, describe_outcomes, describe_plan, outcomes, prepare
from rnn_research import database

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "The study: experiments/<study>.py[:arg].")
flags.DEFINE_alias("study", "config")
_ARRAY = flags.DEFINE_integer("array", 1, "Tasks of the job array (workers).", lower_bound=1)
_PARTITION = flags.DEFINE_string("partition", None, "SLURM partition (default: the cluster's).")
_GPUS = flags.DEFINE_integer("gpus_per_task", 0, "GPUs of each task (of each node of a task).",
                             lower_bound=0)
_CPUS = flags.DEFINE_integer("cpus_per_task", 1, "CPUs of each task (of each node of a task).",
                             lower_bound=1)
_MEM = flags.DEFINE_integer("mem_gb", None, "Memory of each node of a task, GB.")
_NODES = flags.DEFINE_integer("nodes_per_task", 1, "Nodes of each task: one JAX program.",
                              lower_bound=1)
_TIME = flags.DEFINE_integer("time_min", 24 * 60, "Time limit of a task (it then requeues).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Default: sweeps/<study>[-<arg>].")
_STORAGE = flags.DEFINE_string("storage", None, "Optuna database URL (default: "
                               "$RNN_RESEARCH_STORAGE, else SQLite in the sweep dir).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete a sweep dir written by another config.")
_HEARTBEAT = flags.DEFINE_integer("heartbeat", 60, "Seconds between a worker's heartbeats.",
                                  lower_bound=1)
_WAIT = flags.DEFINE_bool("wait", False, "Wait for the array to end, then write the report.")
_REPORT = flags.DEFINE_bool("report", True, "With --wait: write the report at the end.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check and print the plan; submit and write "
                             "nothing.")


def partitions() -> list[str]:
  """The cluster's partitions; a ValueError when no SLURM controller answers."""
  if shutil.which("sinfo") is None:
    raise ValueError("no SLURM scheduler here: sinfo is not on PATH (is this a login node?)")
  run = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
  if run.returncode:
    raise ValueError(f"cannot reach the SLURM scheduler: sinfo says {run.stderr.strip()!r}")
  return run.stdout.split()


def check_request(partition: str | None, nodes: int, gpus: int, config) -> None:
  """Refuses, before anything is written or submitted, an unknown partition or a batch size
  that the devices of a task (`nodes` x `gpus`, or a CPU per node) cannot split."""
  from rnn_research import parallel  # pylint: disable=g-import-not-at-top
  known = partitions()
  if partition is not None and partition not in known:
    raise ValueError(f"partition {partition!r} does not exist; the cluster has {known}")
  parallel.check_batch(config.trial.batch_size, max(gpus, 1) * nodes, config.pack_size, nodes)


class SweepTask:
  """One array task: a worker of the sweep (one JAX program over the task's nodes). submitit
  calls `checkpoint` when SLURM preempts the task or its time runs out, and requeues it."""

  def __init__(self, sweep_dir: str, storage_url: str | None, study_file: str, config: dict,
               heartbeat: int):
    """`storage_url` None: the task reads $RNN_RESEARCH_STORAGE (SLURM gives each task the
    environment it was submitted from), so that no password is pickled into the job's files."""
    self.sweep_dir, self.storage_url = sweep_dir, storage_url
    self.study_file, self.config, self.heartbeat = study_file, config, heartbeat

  def __call__(self, index: int) -> int:
    # pylint: disable=g-import-not-at-top
    from launch.worker import run_worker
    from rnn_research import parallel
    parallel.initialize()
    url = self.storage_url or database.given_url(None)
    if url is None:
      raise ValueError(f"{database.ENVIRONMENT_VARIABLE} is not set in the task's environment")
    return run_worker(self.sweep_dir, url, self.study_file, self.config, index=index,
                      heartbeat=self.heartbeat)

  def checkpoint(self, index: int):
    """The same task again: its trial is retried from its checkpoint (see launch.study)."""
    import submitit  # pylint: disable=g-import-not-at-top
    return submitit.helpers.DelayedSubmission(self, index)


def task_storage_url(flag_value: str | None, url: str) -> str | None:
  """The database URL that a task's pickled files hold: None when the sweep's `url` comes from
  $RNN_RESEARCH_STORAGE (`flag_value`, --storage, unset), which the task then reads."""
  return None if flag_value is None and database.given_url(None) is not None else url


def submit(sweep, config, array: int) -> str:
  """Submits the array; returns its job id."""
  import submitit  # pylint: disable=g-import-not-at-top
  executor = submitit.SlurmExecutor(folder=sweep.dir.absolute() / "slurm")
  executor.update_parameters(
      job_name=f"{config.study.name}-sweep", partition=_PARTITION.value, time=_TIME.value,
      nodes=_NODES.value, ntasks_per_node=1, cpus_per_task=_CPUS.value,
      gpus_per_task=_GPUS.value or None, mem=f"{_MEM.value}G" if _MEM.value else None,
      array_parallelism=array)
  task = SweepTask(str(sweep.dir.absolute()), task_storage_url(_STORAGE.value, sweep.url),
                   sweep.study_file, config.to_dict(), _HEARTBEAT.value)
  jobs = executor.map_array(task, list(range(array)))
  return jobs[0].job_id.split("_")[0]


def wait(job_id: str, poll_s: float = 2.0) -> None:
  """Returns when no task of the array is pending or running."""
  while subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True,
                       text=True).stdout.strip():
    time.sleep(poll_s)


def main(argv):
  del argv
  config = _CONFIG.value
  with cli.bad_input():
    check_request(_PARTITION.value, _NODES.value, _GPUS.value, config)
    plan = check(config, config_flags.get_config_filename(flags.FLAGS["config"]),
                 _SWEEP_DIR.value, _STORAGE.value, _OVERWRITE.value)
  if database.given_url(_STORAGE.value) is None:
    print("note: the study database is SQLite in the sweep dir: every task must run on this "
          "machine; pass --storage=postgresql://... for a cluster", file=sys.stderr)
  if _DRY_RUN.value:
    print(describe_plan(plan, _ARRAY.value))
    return
  with cli.bad_input():
    sweep = prepare(plan)
  job_id = submit(sweep, config, _ARRAY.value)
  print(f"submitted job array {job_id} ({_ARRAY.value} tasks); logs in {sweep.dir / 'slurm'}",
        flush=True)
  if not _WAIT.value:
    return
  wait(job_id)
  total = len(config.variants) * config.trials_per_variant
  counts = outcomes(sweep.studies, config.max_retries)
  print(describe_outcomes(counts, total, sweep.dir))
  if sum(counts.values()) < total:
    raise SystemExit("some trials are not done; run the same command again to resume them")
  if not counts["completed"]:
    raise SystemExit("error: no trial completed, so there is no report; the errors are above")
  if not _REPORT.value:
    return
  from rnn_research.analysis import write_report  # pylint: disable=g-import-not-at-top
  print(f"report: {write_report(sweep.dir, storage=sweep.url)}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
