"""Trains the best trial of each variant of a finished sweep again with fresh seeds: how much of
a variant's result is its configuration and how much the luck of its seed.

    python -m launch.reseed --sweep_dir=sweeps/polyphonic-jsb --seeds=3

For each variant, the completed trial with the best validation metric (the declaration's
objective; ties: the lower trial number) is trained again with seeds FIRST_SEED, FIRST_SEED + 1,
... (no search trial has them: a search trial's seed is its number), each as its own trial with
its own initialisation, dropout and data order, in `<sweep_dir>/reseed/<variant>/<seed>`, by one
single-threaded worker process per core. Running the same command again resumes: finished runs
are read back, interrupted ones restart from their checkpoints. Writes `<sweep_dir>/reseed.json`
(`summarise`): per variant, the chosen trial, each seed's result, and the test metric's mean and
sample standard deviation over the seeds that completed.
"""
import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import statistics

from absl import app, flags

from launch import cli, cores
from rnn_research.analysis import records as rec

FIRST_SEED = 1000
RESEED_DIR, RESEED_FILE = "reseed", "reseed.json"


def best_trials(sweep_dir: str, storage: str | None = None) -> dict[str, rec.TrialRecord]:
  """{variant: its completed trial with the best validation metric}, in the declared order;
  a SweepError naming the variants that have none."""
  study = rec.load_study(sweep_dir)
  best = {}
  for trial in rec.load_trials(sweep_dir, study, storage):
    if trial.status != rec.COMPLETED or trial.valid_metric is None:
      continue
    current = best.get(trial.variant)
    if current is None or study.better(trial.valid_metric, current.valid_metric):
      best[trial.variant] = trial
  missing = [v for v in rec.selected_variants(sweep_dir) if v not in best]
  if missing:
    raise rec.SweepError(f"variants {missing} have no completed trial in {sweep_dir} to reseed")
  return best


def seed_configs(sweep_dir: str, trial: rec.TrialRecord, seeds: int) -> dict[int, dict]:
  """{seed: the trial's train config (its workdir's config.json) with that seed}."""
  with open(os.path.join(sweep_dir, trial.workdir, "config.json")) as f:
    config = json.load(f)
  return {seed: {**config, "seed": seed} for seed in range(FIRST_SEED, FIRST_SEED + seeds)}


def run_dir(sweep_dir: str, variant: str, seed: int | str) -> pathlib.Path:
  """The workdir of a variant's run with `seed`: <sweep_dir>/reseed/<variant>/<seed>."""
  return pathlib.Path(sweep_dir, RESEED_DIR, variant, str(seed))


def _train(config: dict, workdir: str) -> dict:
  """One run in a worker process: its result (rnn_research.train.train_and_evaluate's)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rnn_research import train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
  return train.train_pack([ml_collections.ConfigDict(config)], [workdir],
                          show_progress=False)[0]


def summarise(study, best: rec.TrialRecord, results: dict[int, dict]) -> dict:
  """A variant's entry of reseed.json: the chosen trial, {seed: result} and the test metric's
  mean and sample std (None below two completed seeds) over the completed seeds."""
  values = [r[study.test_key] for r in results.values() if r.get("status") == rec.COMPLETED]
  return {"trial": best.number, "params": best.params, "valid": best.valid_metric,
          "test": best.test_metric, "num_params": best.num_params,
          "seeds": {str(s): r for s, r in results.items()}, "completed": len(values),
          "mean": statistics.fmean(values) if values else None,
          "std": statistics.stdev(values) if len(values) > 1 else None}


def reseed(sweep_dir: str, seeds: int, workers: int, storage: str | None = None) -> dict:
  """Trains every variant's best trial with `seeds` fresh seeds (see the module docstring) and
  writes and returns reseed.json's content."""
  if not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f"seeds must be a positive int, got {seeds!r}")
  if not isinstance(workers, int) or workers < 1:
    raise ValueError(f"workers must be a positive int, got {workers!r}")
  study = rec.load_study(sweep_dir)
  best = best_trials(sweep_dir, storage)
  runs = {(variant, seed): config for variant, trial in best.items()
          for seed, config in seed_configs(sweep_dir, trial, seeds).items()}
  environment = cores.worker_environment(workers, str(pathlib.Path(sweep_dir, "jax_cache")
                                                      .absolute()))
  context = multiprocessing.get_context("spawn")  # JAX must not be forked
  with cores.environment(environment), concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context) as pool:
    futures = {key: pool.submit(_train, config, str(run_dir(sweep_dir, *key)))
               for key, config in runs.items()}
    results = {key: future.result() for key, future in futures.items()}
  summary = {"metric": study.test_key, "first_seed": FIRST_SEED, "seeds": seeds,
             "variants": {variant: summarise(study, trial, {s: results[(variant, s)]
                                                            for (v, s) in runs if v == variant})
                          for variant, trial in best.items()}}
  pathlib.Path(sweep_dir, RESEED_FILE).write_text(json.dumps(summary, indent=1) + "\n")
  return summary


def main(argv):
  del argv
  with cli.bad_input():
    summary = reseed(_SWEEP_DIR.value, _SEEDS.value, _WORKERS.value or cores.default_workers(),
                     _STORAGE.value)
  for variant, entry in summary["variants"].items():
    spread = "" if entry["std"] is None else f" ± {entry['std']:.3f}"
    mean = "none completed" if entry["mean"] is None else f"{entry['mean']:.3f}{spread}"
    print(f"{variant}: trial {entry['trial']}, {summary['metric']} {mean} over "
          f"{entry['completed']} of {summary['seeds']} seeds")
  print(f"wrote {pathlib.Path(_SWEEP_DIR.value, RESEED_FILE)}")


if __name__ == "__main__":
  _SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "The finished sweep.", required=True)
  _SEEDS = flags.DEFINE_integer("seeds", 3, "Fresh seeds per variant.")
  _WORKERS = flags.DEFINE_integer("workers", None, "Worker processes (default: one per core).")
  _STORAGE = flags.DEFINE_string("storage", None, "Optuna database URL (default: the sweep's).")
  app.run(main)
