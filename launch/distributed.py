"""A sweep worker per host, for machines no scheduler manages (TPU VMs, GPU nodes): run the same
command on every host; the workers share the study database and the sweep dir (shared storage).
See launch/README.md for the recipes.

    # independent hosts, each one worker training its own trials on all its devices
    python -m launch.distributed --study=experiments/odyssey.py --sweep_dir=/shared/sweeps/ody \
        --storage=postgresql://user:password@dbhost/odyssey --index=$HOST_NUMBER
    # N hosts as one JAX program that trains each pack data parallel over all their devices
    python -m launch.distributed ... --coordinator_address=host0:8476 --num_processes=N \
        --process_id=$HOST_NUMBER        # or --auto_distributed on the hosts of a TPU slice

The first worker to start prepares the sweep (binds the config to the sweep dir, builds the
data) while the others wait; the workers send heartbeats and retry the trials of dead ones
from their checkpoints (see launch/study.py). Starting more workers later adds them to the
sweep; `python -m rnn_research.analysis.report --sweep_dir=... --storage=...` writes the report.
"""
from absl import app, flags
from ml_collections import config_flags

from launch import cli
from launch import study as studies
from launch.sweep import check, count_done, prepare

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "The study: experiments/<study>.py[:arg].")
flags.DEFINE_alias("study", "config")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Default: sweeps/<study>[-<arg>].")
_STORAGE = flags.DEFINE_string("storage", None, "Optuna database URL (default: "
                               "$RNN_RESEARCH_STORAGE, else SQLite in the sweep dir).")
_HEARTBEAT = flags.DEFINE_integer("heartbeat", 60, "Seconds between a worker's heartbeats.",
                                  lower_bound=1)
_INDEX = flags.DEFINE_integer("index", 0, "This worker's number: spreads workers over variants.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of one JAX program.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's number in the program.")
_AUTO = flags.DEFINE_bool("auto_distributed", False,
                          "jax.distributed.initialize() as JAX detects it (TPU slice, MPI).")


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top  (JAX joins the other processes before anything else)
  from rnn_research import parallel
  parallel.initialize(_COORDINATOR.value, _PROCESSES.value, _PROCESS_ID.value, _AUTO.value)
  import jax
  from launch.worker import run_worker
  # pylint: enable=g-import-not-at-top
  config = _CONFIG.value
  config_argument = config_flags.get_config_filename(flags.FLAGS["config"])
  plan_sweep = lambda: check(config, config_argument, _SWEEP_DIR.value, _STORAGE.value,
                             overwrite=False)
  with cli.bad_input():
    plan = plan_sweep()
  sweep_dir, url = plan.dir, plan.url
  if jax.process_index() == 0:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with studies.claim_lock(url, sweep_dir, f"prepare {sweep_dir.absolute()}"), cli.bad_input():
      sweep = prepare(plan_sweep())  # checked again: another host may have prepared it meanwhile
  parallel.broadcast_json(None)  # the other processes wait for process 0 to prepare
  trained = run_worker(str(sweep_dir), url, plan.study_file, config.to_dict(), _INDEX.value,
                       _HEARTBEAT.value)
  if jax.process_index() == 0:
    print(f"worker {_INDEX.value}: trained {trained} trials; "
          f"{count_done(sweep.studies, config.max_retries)} done in {sweep_dir}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
