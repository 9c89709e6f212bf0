"""Sweep throughput on CPUs: trials per hour of Odyssey trials against PyTorch running the same
trials on the same cores, side by side in one run.

    python -m benchmarks.sweep_throughput --torch_python=PYTHON_WITH_TORCH \
        --data_path=../shared/data/JSB_Chorales.mat   # writes benchmarks/results/sweep_throughput.{json,md}

The trials are the study's (`experiments/odyssey.py`) on the standard JSB Chorales: the
no-peephole LSTM (PyTorch's nn.LSTM) with 88 sigmoid outputs, SGD with Nesterov momentum and an
update per sequence, Gaussian input noise, validation every epoch, early stopping, and the test
NLL at the best epoch. For each hidden size, `--trials` trials draw learning rate, momentum and
input noise from the study's search space (seeded; the hidden size fixed) and train `--epochs`
epochs each.

- This library: `train.train_pack` in the layout `launch.local` uses (`launch.cores`: one
  single-threaded worker process per core, the trials split into one pack per worker), and each
  other layout of `--layouts` ("PROCESSESxTHREADS").
- PyTorch (`benchmarks/torch_trials.py`, in its own interpreter `--torch_python`): nn.LSTM +
  nn.Linear, the same trials in the same data order, on worker processes pulling trials from one
  queue, each layout of `--torch_layouts`; the best one is the reference.

Both times run from starting the worker processes to the last result, so they include what a
sweep worker pays: imports, data loading and compilation. Before timing, both libraries train the
same model: from equal initial weights, without noise, the first updates give equal losses.
"""
import datetime
import json
import multiprocessing
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optuna
from absl import app, flags, logging
from flax import nnx

from benchmarks.common import cpu_name, main_flags, write_json
from experiments import odyssey
from launch import cores
from rnn_research import declaration, train

FLAGS = flags.FLAGS
flags.DEFINE_string("torch_python", "python3.11", "A Python interpreter that has torch.")
flags.DEFINE_string("data_path", "../shared/data/JSB_Chorales.mat", "The standard JSB file.")
flags.DEFINE_list("hidden_sizes", ["32", "128", "200"], "Hidden sizes to measure.")
flags.DEFINE_integer("trials", 8, "Trials per hidden size.")
flags.DEFINE_integer("epochs", 15, "Epochs per trial.")
flags.DEFINE_list("layouts", ["default", "1x2"], "This library's layouts, PROCESSESxTHREADS "
                  "('default': launch.local's).")
flags.DEFINE_list("torch_layouts", ["2x1", "1x2"], "PyTorch's layouts, PROCESSESxTHREADS.")
flags.DEFINE_integer("check_updates", 5, "Updates compared from equal initial weights.")
flags.DEFINE_string("out", str(pathlib.Path(__file__).parent / "results" / "sweep_throughput"),
                    "Output path without extension.")

SPLITS = ("train", "validation", "test")


def study_config():
  config = odyssey.get_config()
  config.unlock()
  config.trial.update(data="standard", data_path=str(pathlib.Path(FLAGS.data_path).absolute()),
                      max_epochs=FLAGS.epochs)
  return config


def sample_trials(config, hidden_size: int, count: int) -> list:
  """`count` trial configs of NP from the search space, the hidden size fixed."""
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=hidden_size))
  space = declaration.of(config).distributions()
  return [odyssey.trial_config(config, "NP", study.ask(space).params | {"hidden_size": hidden_size},
                               seed=seed) for seed in range(count)]


def export_data(trial_config, path: str) -> None:
  """Each split's piano rolls for PyTorch (see torch_trials.py)."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks.next_step import DATASETS  # pylint: disable=g-import-not-at-top
  arrays = {}
  for split in SPLITS:
    source = data.load(DATASETS[trial_config.data][0], split, path=trial_config.data_path)
    rolls = [np.asarray(source[i]["roll"], np.uint8) for i in range(len(source))]
    arrays[f"{split}_rolls"] = np.concatenate(rolls)
    arrays[f"{split}_offsets"] = np.cumsum([0] + [len(r) for r in rolls])
  np.savez(path, **arrays)


def run_torch(spec: dict, data_path: str, tmp: str) -> dict:
  spec_path, out_path = f"{tmp}/spec.json", f"{tmp}/torch_out.json"
  pathlib.Path(spec_path).write_text(json.dumps(spec))
  subprocess.run([FLAGS.torch_python, str(pathlib.Path(__file__).with_name("torch_trials.py")),
                  spec_path, data_path, out_path], check=True)
  return json.loads(pathlib.Path(out_path).read_text())


def torch_trial(config) -> dict:
  return {"hidden_size": config.model.hidden_size, "learning_rate": config.learning_rate,
          "momentum": config.momentum, "input_noise": config.input_noise, "seed": config.seed}


def check_same_model(config, task, data_path: str, tmp: str) -> dict:
  """The first updates' losses of both libraries from equal initial weights, no noise."""
  hidden = config.model.hidden_size
  rng = np.random.default_rng(0)
  bound = 1 / np.sqrt(hidden)
  weights = {name: rng.uniform(-bound, bound, shape).astype(np.float32) for name, shape in (
      ("lstm.weight_ih_l0", (4 * hidden, 88)), ("lstm.weight_hh_l0", (4 * hidden, hidden)),
      ("lstm.bias_ih_l0", (4 * hidden,)), ("lstm.bias_hh_l0", (4 * hidden,)),
      ("head.weight", (88, hidden)), ("head.bias", (88,)))}
  np.savez(f"{tmp}/weights.npz", **weights)
  torch_losses = run_torch({"op": "check", "weights": f"{tmp}/weights.npz",
                            "trial": torch_trial(config), "updates": FLAGS.check_updates,
                            "data_seed": config.seed}, data_path, tmp)["losses"]

  model = task.make_model(config.model, nnx.Rngs(0))
  from rnn_research.layers import load_torch_state_dict  # pylint: disable=g-import-not-at-top
  load_torch_state_dict(model.backbone, {k[5:]: v for k, v in weights.items()
                                         if k.startswith("lstm.")})
  model.head.kernel[...] = weights["head.weight"].T
  model.head.bias[...] = weights["head.bias"]
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  tx = train.make_optimizer(config)
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
           "other": other}
  step = jax.jit(lambda s, b: train.train_step(graphdef, tx, task.loss, s, b, jax.random.key(0),
                                               0.0))
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  loader = data.Loader(task.train, 1, transform=task.transform, seed=config.seed,
                       pad_multiple=config.pad_multiple)
  ours = []
  for _ in range(FLAGS.check_updates):
    state, metrics = step(state, next(loader))
    ours.append(float(metrics["loss"]))
  difference = max(abs(a - b) / abs(b) for a, b in zip(ours, torch_losses))
  if difference > 1e-4:
    raise AssertionError(f"the libraries train different models: losses {ours} (ours) and "
                         f"{torch_losses} (PyTorch)")
  return {"hidden": hidden, "ours": ours, "torch": torch_losses, "max_rel_diff": difference}


def _train_share(configs: list, workdirs: list) -> None:
  """A worker process: trains its trials as one pack."""
  logging.set_verbosity(logging.WARNING)
  from rnn_research import train as worker_train  # pylint: disable=g-import-not-at-top,reimported
  import ml_collections  # pylint: disable=g-import-not-at-top
  worker_train.train_pack([ml_collections.ConfigDict(c) for c in configs], workdirs)


def parse_layout(layout: str) -> tuple[int, int]:
  """"PROCESSESxTHREADS", or "default" (launch.local's: a worker per core) -> the two."""
  if layout == "default":
    return cores.default_workers(), 1
  processes, threads = map(int, layout.split("x"))
  return processes, threads


def run_ours(configs, layout: str, tmp: str) -> float:
  """Seconds to train `configs` on `layout`'s processes, one pack each, from a cold
  compilation cache of their own (as a new sweep)."""
  processes, threads = parse_layout(layout)
  if processes * threads != cores.default_workers():
    raise ValueError(f"layout {layout} does not use the {cores.default_workers()} cores")
  shares = [configs[k::processes] for k in range(processes)]
  context = multiprocessing.get_context("spawn")
  env = {**cores.worker_environment(processes, ""),
         "JAX_COMPILATION_CACHE_DIR": f"{tmp}/{layout}/jax_cache"}  # cold, as a new sweep's
  start = time.perf_counter()
  workers = [context.Process(target=_train_share, args=(
      [c.to_dict() for c in share], [f"{tmp}/{layout}/{k}/{j}" for j in range(len(share))]))
             for k, share in enumerate(shares)]
  with cores.environment(env):
    for k, worker in enumerate(workers):
      worker.start()
      cores.pin(worker.pid, k, processes)
  for worker in workers:
    worker.join()
  seconds = time.perf_counter() - start
  if any(w.exitcode for w in workers):
    raise RuntimeError(f"a worker of layout {layout} failed")
  return seconds


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  config = study_config()
  task = train.make_task(config.trial)
  rows, checks = [], []
  with tempfile.TemporaryDirectory() as tmp:
    data_path = f"{tmp}/jsb.npz"
    export_data(config.trial, data_path)
    for hidden_size in map(int, FLAGS.hidden_sizes):
      configs = sample_trials(config, hidden_size, FLAGS.trials)
      checks.append(check_same_model(configs[0], task, data_path, tmp))
      for layout in FLAGS.layouts:
        seconds = run_ours(configs, layout, f"{tmp}/h{hidden_size}")
        processes, threads = parse_layout(layout)
        rows.append({"impl": "ours", "hidden": hidden_size, "layout": f"{processes}x{threads}",
                     "default_layout": layout == "default", "seconds": seconds})
        print(rows[-1], flush=True)
      for layout in FLAGS.torch_layouts:
        processes, threads = parse_layout(layout)
        out = run_torch({"op": "train", "trials": [torch_trial(c) for c in configs],
                         "max_epochs": FLAGS.epochs, "patience": config.trial.patience,
                         "data_seed": configs[0].seed, "workers": processes, "threads": threads},
                        data_path, tmp)
        rows.append({"impl": "torch_cpu", "hidden": hidden_size, "layout": layout,
                     "seconds": out["seconds"], "torch": out["torch"]})
        print(rows[-1], flush=True)
  for row in rows:
    row.update(trials=FLAGS.trials, epochs=FLAGS.epochs,
               trials_per_hour=3600 * FLAGS.trials / row["seconds"])
  ratios = {}
  for hidden_size in map(int, FLAGS.hidden_sizes):
    ours = next(r for r in rows if r["hidden"] == hidden_size and r.get("default_layout"))
    torch_best = max((r for r in rows if r["hidden"] == hidden_size and r["impl"] == "torch_cpu"),
                     key=lambda r: r["trials_per_hour"])
    ratios[str(hidden_size)] = ours["trials_per_hour"] / torch_best["trials_per_hour"]
  write_results(rows, ratios, checks)


def write_results(rows, ratios, checks) -> None:
  torch_version = next((r["torch"] for r in rows if "torch" in r), None)
  result = {"benchmark": "sweep_throughput",
            "command": "python -m benchmarks.sweep_throughput " + " ".join(sys.argv[1:]),
            "device": cpu_name(), "platform": "cpu", "cpu_count": os.cpu_count(),
            "jax": jax.__version__, "torch": torch_version,
            "date": datetime.date.today().isoformat(), "data": "jsb_chorales/standard",
            "trials_per_hour_ours_over_torch": ratios, "same_model_check": checks, "rows": rows}
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  write_json(out.with_suffix(".json"), result, main_flags())
  lines = ["| hidden | impl | layout (processes x threads) | seconds | trials per hour |",
           "|---|---|---|---|---|"]
  lines += [f"| {r['hidden']} | {r['impl']}{' (default)' if r.get('default_layout') else ''} | "
            f"{r['layout']} | {r['seconds']:.1f} | {r['trials_per_hour']:.0f} |" for r in rows]
  header = (f"{FLAGS.trials} Odyssey trials (NP LSTM, SGD with Nesterov momentum, an update per "
            f"sequence, {FLAGS.epochs} epochs, standard JSB Chorales) per hidden size on "
            f"{result['device']} ({result['cpu_count']} cores), jax {jax.__version__}, torch "
            f"{torch_version}, {result['date']}. Trials per hour, this library's default layout "
            "over PyTorch's best: " + ", ".join(f"hidden {h}: {r:.2f}x" for h, r in ratios.items())
            + "\n\n")
  out.with_suffix(".md").write_text(header + "\n".join(lines) + "\n")
  print(header + "\n".join(lines))


if __name__ == "__main__":
  app.run(main)
