"""Training one trial: `train_and_evaluate(config, workdir)`.

Next-step prediction on piano rolls (88 sigmoids, NLL in nats per frame summed over keys, each
sequence's first frame unscored) or characters (softmax, reported in bits per character), with
the Odyssey paper's optimiser (SGD with Nesterov momentum; Adam as an option), Gaussian input
noise in training, optional clipping by global norm, and early stopping on validation NLL. The
test metric is the one at the best validation epoch.

The workdir holds everything: config.json, checkpoints/{latest,best} (orbax, with the data
position), metrics.jsonl (one line per epoch) and, once finished, result.json. Running again
with the same workdir resumes where it stopped; a finished workdir returns its result at once.
A non-finite loss ends the trial as "diverged" with the step.
"""
import dataclasses
import functools
import json
import math
import pathlib
import shutil
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from rnn_research import metrics
from rnn_research.checkpoint import Checkpoints
from rnn_research.models import NextStepModel

# config.data -> (TFDS name, task)
DATASETS = {"music21": ("jsb_chorales/music21", "piano_roll"),
            "standard": ("jsb_chorales/standard", "piano_roll"),
            "abc_tunes": ("abc_tunes", "characters")}
OPTIMIZERS = ("sgd_nesterov", "adam")


def default_config() -> ml_collections.ConfigDict:
  """Every key a trial reads, with defaults; studies override what they search."""
  return ml_collections.ConfigDict(dict(
      data="music21",           # a key of DATASETS
      data_path="",             # the .pickle/.mat file for data="standard"
      data_dir="",              # TFDS data dir ("" = $RNN_RESEARCH_DATA_DIR or TFDS's default)
      model=dict(cell="lstm", variant="V", hidden_size=100, num_layers=1, backend="scan"),
      optimizer="sgd_nesterov",
      learning_rate=1e-3,
      momentum=0.9,
      clip_norm=0.0,            # clip gradients to this global norm; 0 = no clipping
      batch_size=1,             # 1 = an update per sequence, as the paper
      eval_batch_size=64,
      input_noise=0.0,          # std of Gaussian noise added to the inputs in training
      max_epochs=150,
      patience=15,              # stop after this many epochs without a better validation NLL
      seed=0,
      pad_multiple=16,          # pad time to a multiple of this: fewer shapes to compile
  ))


@dataclasses.dataclass
class Task:
  """The data and loss of one trial."""
  train: object                 # random-access source of the training split
  eval_batches: dict            # {"validation": [batch], "test": [batch]}, padded, in order
  transform: Callable
  loss: Callable                # (logits, targets, mask) -> (sum, count)
  in_features: int
  out_features: int
  embed: bool
  baseline_nll: float | None    # per-key frequency model on test (piano rolls)


def _scoring(task_kind: str, batch: dict) -> jax.Array:
  mask = jnp.asarray(batch["mask"])
  return metrics.scored_frames(mask) if task_kind == "piano_roll" else mask


def make_task(config) -> Task:
  from rnn_research import data  # pylint: disable=g-import-not-at-top  (heavy, lazy)
  if config.data not in DATASETS:
    raise ValueError(f"data must be one of {sorted(DATASETS)}, got {config.data!r}")
  name, kind = DATASETS[config.data]
  options = dict(data_dir=config.data_dir or None, path=config.data_path or None)
  sources = {split: data.load(name, split, **options) for split in ("train", "validation", "test")}
  if kind == "piano_roll":
    transform, loss, size, embed = data.piano_roll_next_step, metrics.piano_roll_nll, 88, False
    baseline = float(sources["test"].info.metadata["statistics"]["frequency_nll_test"])
  else:
    vocab = data.load_vocabulary(name, data_dir=options["data_dir"])
    transform, loss, size, embed = data.char_next_step(vocab), metrics.character_nll, len(vocab), True
    baseline = None
  eval_batches = {split: list(data.Loader(sources[split], config.eval_batch_size,
                                          transform=transform, shuffle=False, num_epochs=1,
                                          pad_multiple=config.pad_multiple))
                  for split in ("validation", "test")}
  return Task(sources["train"], eval_batches, transform, loss, size, size, embed, baseline)


def make_optimizer(config) -> optax.GradientTransformation:
  """Nesterov SGD or Adam, learning rate (and momentum) injected so they can vary per trial."""
  if config.optimizer == "sgd_nesterov":
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=config.learning_rate,
                                             momentum=config.momentum, nesterov=True)
  elif config.optimizer == "adam":
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate)
  else:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
  if config.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  return tx


def train_step(graphdef, tx, loss_fn, task_kind, noise_std, state, batch, rng):
  """One update. state: {"params", "opt_state", "step", "other": the model's non-parameter
  state, e.g. dropout's random counter} -> (state, {"loss", "grad_norm", "param_norm"}); the
  loss is the mean NLL per scored frame of the batch."""
  inputs = batch["inputs"]
  if noise_std > 0:
    inputs = inputs + noise_std * jax.random.normal(jax.random.fold_in(rng, state["step"]),
                                                    inputs.shape, inputs.dtype)

  def loss(params):
    model = nnx.merge(graphdef, params, state["other"])
    total, count = loss_fn(model(inputs, batch["lengths"]), batch["targets"],
                           _scoring(task_kind, batch))
    return total / jnp.maximum(count, 1), nnx.state(model, nnx.Not(nnx.Param))

  (value, other), grads = jax.value_and_grad(loss, has_aux=True)(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  new_state = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
               "step": state["step"] + 1, "other": other}
  return new_state, {"loss": value, "grad_norm": optax.tree.norm(grads),
                     "param_norm": optax.tree.norm(state["params"])}


def eval_step(graphdef, other, loss_fn, task_kind, params, batch):
  """(NLL summed over the batch's scored positions, their number); graphdef in eval mode."""
  logits = nnx.merge(graphdef, params, other)(batch["inputs"], batch["lengths"])
  return loss_fn(logits, batch["targets"], _scoring(task_kind, batch))


def evaluate(step_fn, params, batches) -> float:
  totals = [step_fn(params, b) for b in batches]
  return float(sum(t for t, _ in totals) / sum(c for _, c in totals))


class Workdir:
  """The files of one trial."""

  def __init__(self, path, config, overwrite: bool):
    self.path = pathlib.Path(path)
    self.config_file = self.path / "config.json"
    self.metrics_file = self.path / "metrics.jsonl"
    self.result_file = self.path / "result.json"
    wanted = json.loads(config.to_json())
    if self.config_file.exists():
      stored = json.loads(self.config_file.read_text())
      if stored != wanted:
        if not overwrite:
          raise ValueError(f"workdir {self.path} was written by a different config (keys "
                           f"{_differing_keys(stored, wanted)} differ); use overwrite=True "
                           "(--overwrite) to start it afresh")
        shutil.rmtree(self.path)
    self.path.mkdir(parents=True, exist_ok=True)
    self.config_file.write_text(json.dumps(wanted, indent=1, sort_keys=True))

  def result(self) -> dict | None:
    return json.loads(self.result_file.read_text()) if self.result_file.exists() else None

  def finish(self, result: dict) -> dict:
    self.result_file.write_text(json.dumps(result, indent=1))
    return result

  def append_metrics(self, record: dict, keep_through_epoch: int) -> None:
    """Appends an epoch's line, first dropping lines after `keep_through_epoch` (left by a run
    that was killed between writing metrics and checkpointing)."""
    lines = self.metrics_file.read_text().splitlines() if self.metrics_file.exists() else []
    lines = [l for l in lines if json.loads(l)["epoch"] <= keep_through_epoch]
    self.metrics_file.write_text("".join(l + "\n" for l in lines + [json.dumps(record)]))


def _differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
  keys = []
  for key in sorted(set(a) | set(b)):
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
      keys += _differing_keys(a[key], b[key], f"{prefix}{key}.")
    elif a.get(key) != b.get(key):
      keys.append(prefix + key)
  return keys


def _progress(total: int, description: str):
  """A tqdm bar on a terminal; elsewhere the bar is off and each epoch writes a log line."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=description, disable=not sys.stderr.isatty(), leave=False)


def _log_line(bar, message: str) -> None:
  if bar.disable:
    print(message, file=sys.stderr, flush=True)


def train_and_evaluate(config, workdir, *, overwrite: bool = False, task: Task | None = None) -> dict:
  """Trains one trial to early stopping and returns its result:
  {"status": "completed" | "diverged", "valid_nll", "test_nll", "best_epoch", "epochs",
   "num_params", "baseline_nll", "diverged_step"}; NLLs in nats per frame (or per character)."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  files = Workdir(workdir, config, overwrite)
  if (done := files.result()) is not None:
    return done
  task = task or make_task(config)
  kind = DATASETS[config.data][1]
  model = NextStepModel(config.model, task.in_features, task.out_features, embed=task.embed,
                        rngs=nnx.Rngs(config.seed))
  model.eval()
  eval_graphdef, _, eval_other = nnx.split(model, nnx.Param, ...)
  model.train()
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  tx = make_optimizer(config)
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
           "other": other}
  step_fn = jax.jit(functools.partial(train_step, graphdef, tx, task.loss, kind, config.input_noise),
                    donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, eval_graphdef, eval_other, task.loss, kind))
  loader = data.Loader(task.train, config.batch_size, transform=task.transform, seed=config.seed,
                       pad_multiple=config.pad_multiple)
  checkpoints = Checkpoints(files.path)
  meta = {"epoch": 0, "best_valid": math.inf, "best_epoch": 0, "test_at_best": math.nan,
          "bad_epochs": 0}
  if checkpoints.latest_epoch() is not None:
    state, meta = checkpoints.restore("latest", jax.tree.map(jnp.zeros_like, state))
    loader.set_state(meta.pop("loader"))
    print(f"{files.path}: resumed after epoch {meta['epoch']}", file=sys.stderr, flush=True)

  rng = jax.random.key(config.seed)
  result = {"num_params": num_params, "baseline_nll": task.baseline_nll}
  bar = _progress(config.max_epochs, f"trial {files.path.name}")
  bar.update(meta["epoch"])
  start = time.time()
  try:
    while meta["epoch"] < config.max_epochs and meta["bad_epochs"] < config.patience:
      epoch = meta["epoch"] + 1
      losses = []
      for _ in range(loader.batches_per_epoch):
        state, step_metrics = step_fn(state, next(loader), rng)
        losses.append(float(step_metrics["loss"]))
        if not math.isfinite(losses[-1]):
          return files.finish({**result, "status": "diverged", "diverged_step": int(state["step"]),
                               "epochs": epoch})
      valid = evaluate(eval_fn, state["params"], task.eval_batches["validation"])
      if valid < meta["best_valid"]:
        meta.update(best_valid=valid, best_epoch=epoch, bad_epochs=0,
                    test_at_best=evaluate(eval_fn, state["params"], task.eval_batches["test"]))
        checkpoints.save("best", epoch, state["params"], {"epoch": epoch, "valid_nll": valid})
      else:
        meta["bad_epochs"] += 1
      record = {"epoch": epoch, "step": int(state["step"]), "train_loss": float(np.mean(losses)),
                "valid_nll": valid, "grad_norm": float(step_metrics["grad_norm"]),
                "param_norm": float(step_metrics["param_norm"]), "wall_time": time.time() - start}
      files.append_metrics(record, keep_through_epoch=meta["epoch"])
      meta["epoch"] = epoch
      checkpoints.save("latest", epoch, state, {**meta, "loader": loader.get_state()})
      _log_line(bar, f"{files.path} epoch {epoch}: train {record['train_loss']:.4f} valid "
                     f"{valid:.4f} (best {meta['best_valid']:.4f} at epoch {meta['best_epoch']})")
      bar.update(1)
  finally:
    bar.close()
    checkpoints.close()
  return files.finish({**result, "status": "completed", "valid_nll": meta["best_valid"],
                       "test_nll": meta["test_at_best"], "best_epoch": meta["best_epoch"],
                       "epochs": meta["epoch"]})
