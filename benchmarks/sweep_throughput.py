"""Trials per hour of the smoke Odyssey study's trials, one by one versus packed (one compiled
program per pack: `rnn_research.train.train_pack`), on the built-in JSB Chorales.

    python -m benchmarks.sweep_throughput            # writes benchmarks/results/sweep_throughput.{json,md}

For each hidden size, `--trials` trials of variant V with params drawn from the study's search
space (the hidden size fixed, as in a pack) are trained for the smoke config's epochs: first one
after another with `train_and_evaluate`, then all together with `train_pack`. Both include
compilation, as a sweep pays it per trial (or per pack).
"""
import datetime
import json
import os
import pathlib
import sys
import tempfile
import time

import jax
import optuna
from absl import app, flags, logging

from benchmarks.common import cpu_name
from experiments import odyssey
from rnn_research import train

FLAGS = flags.FLAGS
flags.DEFINE_list("hidden_sizes", ["32", "64"], "Hidden sizes to measure.")
flags.DEFINE_integer("trials", 8, "Trials per measurement (the pack size).")
flags.DEFINE_string("out", str(pathlib.Path(__file__).parent / "results" / "sweep_throughput"),
                    "Output path without extension.")


def sample_configs(config, hidden_size: int, count: int):
  """`count` trial configs of V from the search space, with the hidden size fixed."""
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=hidden_size))
  space = odyssey.search_space()
  configs = []
  for seed in range(count):
    params = study.ask(space).params | {"hidden_size": hidden_size}
    configs.append(odyssey.trial_config(config, "V", params, seed=seed))
  return configs


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint file at INFO
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  config = odyssey.get_config("smoke")
  task = train.make_task(config.trial)
  rows = []
  for hidden_size in map(int, FLAGS.hidden_sizes):
    configs = sample_configs(config, hidden_size, FLAGS.trials)
    with tempfile.TemporaryDirectory() as tmp:
      start = time.perf_counter()
      for k, trial in enumerate(configs):
        train.train_and_evaluate(trial, f"{tmp}/single{k}", task=task)
      single = time.perf_counter() - start
      start = time.perf_counter()
      train.train_pack(configs, [f"{tmp}/pack{k}" for k in range(len(configs))], task=task)
      packed = time.perf_counter() - start
    for impl, seconds in (("one_by_one", single), ("packed", packed)):
      rows.append({"variant": "V", "hidden": hidden_size, "trials": len(configs), "impl": impl,
                   "epochs": config.trial.max_epochs, "seconds": seconds,
                   "trials_per_hour": 3600 * len(configs) / seconds})
    print(f"hidden {hidden_size}: one by one {single:.1f} s, packed {packed:.1f} s, "
          f"speed-up {single / packed:.2f}x", flush=True)
  speedups = {str(r["hidden"]): rows[i - 1]["seconds"] / r["seconds"]
              for i, r in enumerate(rows) if r["impl"] == "packed"}
  result = {"benchmark": "sweep_throughput",
            "command": "python -m benchmarks.sweep_throughput " + " ".join(sys.argv[1:]),
            "device": cpu_name(), "platform": "cpu", "cpu_count": os.cpu_count(),
            "jax": jax.__version__, "date": datetime.date.today().isoformat(),
            "data": config.trial.data, "speedup_packed_over_one_by_one": speedups, "rows": rows}
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
  lines = ["| hidden | trials | impl | seconds | trials per hour |", "|---|---|---|---|---|"]
  lines += [f"| {r['hidden']} | {r['trials']} | {r['impl']} | {r['seconds']:.1f} | "
            f"{r['trials_per_hour']:.0f} |" for r in rows]
  header = (f"Smoke Odyssey trials (V, {config.trial.max_epochs} epochs, built-in JSB) on "
            f"{result['device']} ({result['cpu_count']} cores), jax {jax.__version__}, "
            f"{result['date']}. Speed-up packed / one by one: "
            + ", ".join(f"hidden {h}: {s:.2f}x" for h, s in speedups.items()) + "\n\n")
  out.with_suffix(".md").write_text(header + "\n".join(lines) + "\n")
  print(header + "\n".join(lines))


if __name__ == "__main__":
  app.run(main)
