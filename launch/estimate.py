"""A sweep's run time, estimated before it starts from measured throughput: one pack of the
first variant's trials trains one epoch the way a worker trains it (a process of its own with a
worker's environment, launch/cores.py), in a temporary directory that is deleted afterwards.

The estimate is an upper bound for the sweep's packs at that cost: every trial runs its
max_epochs (early stopping ends most sooner), and the other variants cost what the first does.
"""
import dataclasses
import math
import multiprocessing
import pathlib
import tempfile
import time

from launch import cores


@dataclasses.dataclass(frozen=True)
class Measured:
  """One pack of `variant`, measured: seconds before its first epoch (data, model, compilation,
  the final test evaluation) and of one epoch (training and validation)."""
  variant: str
  setup_s: float
  epoch_s: float
  max_epochs: int


def measure(study_file: str, config, workers: int) -> Measured:
  """Trains one epoch of one pack of the first variant, in a worker's environment."""
  context = multiprocessing.get_context("spawn")  # JAX must not be forked
  with tempfile.TemporaryDirectory(prefix="sweep_estimate_") as scratch:
    environment = cores.worker_environment(workers, str(pathlib.Path(scratch) / "jax_cache"))
    with cores.environment(environment):
      pool = context.Pool(1)
    try:
      return pool.apply(_measure_pack, (study_file, config.to_dict(), scratch))
    finally:
      pool.close()
      pool.join()


def _measure_pack(study_file: str, config: dict, scratch: str) -> Measured:
  # pylint: disable=g-import-not-at-top  (in the measuring process)
  import ml_collections
  import optuna
  from absl import logging
  from rnn_research import declaration, train
  from rnn_research.analysis import records
  from rnn_research.experiment import load_module
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  module, config = load_module(study_file), ml_collections.ConfigDict(config)
  declared = declaration.of(config)
  variant, space = config.variants[0], declared.distributions()
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
  first = study.ask(space).params
  shared = {name: first[name] for name in declared.pack_shared}
  params = [first] + [study.ask(space).params | shared for _ in range(config.pack_size - 1)]
  configs = [declaration.trial_config(module, config, variant, p, seed=k)
             for k, p in enumerate(params)]
  max_epochs = configs[0].max_epochs
  for trial in configs:
    trial.max_epochs = 1
  workdirs = [pathlib.Path(scratch) / f"trial{k}" for k in range(len(configs))]
  start = time.time()
  train.train_pack(configs, workdirs)
  total = time.time() - start
  epoch = records.training_time(str(workdirs[0]))
  return Measured(variant, total - epoch, epoch, max_epochs)


def describe(measured: Measured, config, workers: int) -> str:
  """The run-time line of a --dry_run: the sweep's packs spread over `workers`."""
  packs = len(config.variants) * math.ceil(config.trials_per_variant / config.pack_size)
  seconds = math.ceil(packs / workers) * (measured.setup_s
                                          + measured.max_epochs * measured.epoch_s)
  return (f"run time:  at most ~{_duration(seconds)} ({packs} packs on {workers} workers; a pack "
          f"of {measured.variant} measured here: {measured.setup_s:.0f} s to start and "
          f"{measured.epoch_s:.1f} s per epoch, up to {measured.max_epochs} epochs; early "
          "stopping ends most trials sooner)")


def _duration(seconds: float) -> str:
  minutes = math.ceil(seconds / 60)
  return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
