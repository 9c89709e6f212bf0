"""Training one trial: `train_and_evaluate(config, workdir)`.

Any task of `rnn_research.tasks` (`config.task`; next-step prediction on piano rolls or
characters by default) with the Odyssey paper's optimiser (SGD with Nesterov momentum; Adam as an
option), Gaussian input noise in training, optional clipping by global norm, and early stopping
on the validation NLL (the task's loss). Test metrics are the ones at the best validation epoch.

The workdir holds everything: config.json, checkpoints/{latest,best} (orbax, with the data
position), metrics.jsonl (one line per epoch) and, once finished, result.json. Running again
with the same workdir resumes where it stopped; a finished workdir returns its result at once.
A non-finite loss ends the trial as "diverged" with the step.
"""
import functools
import json
import math
import sys
import time
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from rnn_research import metrics, parallel
from rnn_research.checkpoint import Checkpoints
from rnn_research.tasks import Task, make_task
from rnn_research.workdir import Workdir, differing_keys

OPTIMIZERS = ("sgd_nesterov", "adam")
# What may differ between the trials of a pack (see train_pack).
PACKABLE_KEYS = ("learning_rate", "momentum", "input_noise", "seed")


def default_config() -> ml_collections.ConfigDict:
  """Every key a trial reads, with defaults; studies override what they search."""
  return ml_collections.ConfigDict(dict(
      task="next_step",         # a key of rnn_research.tasks.MODULES
      task_options={},          # what the task reads besides the keys below
      data="music21",           # the dataset (next_step: a key of tasks.next_step.DATASETS)
      data_path="",             # the .pickle/.mat file for data="standard"
      data_dir="",              # TFDS data dir ("" = $RNN_RESEARCH_DATA_DIR or TFDS's default)
      model=dict(backbone="lstm", variant="V", hidden_size=100, num_layers=1, backend="scan",
                 dropout=0.0),
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


def train_step(graphdef, tx, loss_fn, state, batch, rng, noise_std):
  """One update. state: {"params", "opt_state", "step", "other": the model's non-parameter
  state, e.g. dropout's random counter} -> (state, {"loss", "grad_norm", "param_norm"}); the
  loss is `loss_fn(model, batch)`'s sum over the count of scored positions; Gaussian noise of
  std `noise_std` is added to float inputs."""
  inputs = batch["inputs"]
  if jnp.issubdtype(inputs.dtype, jnp.floating):
    noise = jax.random.normal(jax.random.fold_in(rng, state["step"]), inputs.shape, inputs.dtype)
    batch = {**batch, "inputs": inputs + noise_std * noise}

  def loss(params):
    model = nnx.merge(graphdef, params, state["other"], copy=True)  # fresh Variables in the trace
    total, count = loss_fn(model, batch)
    return total / jnp.maximum(count, 1), nnx.state(model, nnx.Not(nnx.Param))

  (value, other), grads = jax.value_and_grad(loss, has_aux=True)(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  new_state = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
               "step": state["step"] + 1, "other": other}
  return new_state, {"loss": value, "grad_norm": optax.tree.norm(grads),
                     "param_norm": optax.tree.norm(state["params"])}


def eval_step(graphdef, other, task: Task, params, batch) -> dict:
  """{"nll": (sum, count), and each of task.metrics: (sum, count)} of one batch; graphdef in
  eval mode."""
  model = nnx.merge(graphdef, params, other)
  sums = {"nll": task.loss(model, batch)}
  if task.metrics is not None:
    sums.update(task.metrics(model, batch))
  return sums


def _evaluate(eval_fn, params, batches) -> dict:
  """{name: [trials] mean over the split}, params stacked on a trial axis."""
  mesh = parallel.mesh_of(params)
  sums = [jax.tree.map(np.asarray, eval_fn(params, parallel.shard_batch(b, mesh)))
          for b in batches]
  return {name: np.divide(np.sum([s[name][0] for s in sums], 0, dtype=np.float64),
                          np.maximum(np.sum([s[name][1] for s in sums], 0, dtype=np.float64), 1))
          for name in sums[0]}


def _progress(total: int, description: str):
  """A tqdm bar on a terminal; elsewhere the bar is off and each epoch writes a log line."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=description, disable=not sys.stderr.isatty(), leave=False)


def _log_line(bar, message: str) -> None:
  if bar.disable:
    print(message, file=sys.stderr, flush=True)


def train_and_evaluate(config, workdir, *, overwrite: bool = False,
                       task: Task | None = None) -> dict:
  """Trains one trial to early stopping and returns its result:
  {"status": "completed" | "diverged", "valid_nll", "test_nll", "best_epoch", "epochs",
   "num_params", "baseline_nll", "diverged_step"}; NLLs in nats per frame (piano rolls) or per
  character (text, which also reports "test_bits_per_character")."""
  return train_pack([config], [workdir], overwrite=overwrite, task=task)[0]


def check_packable(configs) -> None:
  """Trials in a pack share everything but PACKABLE_KEYS (the same model shapes and data)."""
  first = json.loads(configs[0].to_json())
  for config in configs[1:]:
    differ = [k for k in differing_keys(first, json.loads(config.to_json()))
              if k not in PACKABLE_KEYS]
    if differ:
      raise ValueError(f"trials in a pack may differ only in {PACKABLE_KEYS}; keys {differ} differ")


def _stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _take(tree, k: int):
  return jax.tree.map(lambda leaf: leaf[k], tree)


def pack_step(step_fn, state, batch, keys, noise_std, running):
  """`train_step` of every trial of a pack at once (vmap over the leading trial axis, the batch
  shared). Trials that are not running, or whose loss is not finite, keep their state."""
  new, step_metrics = jax.vmap(step_fn, in_axes=(0, None, 0, 0))(state, batch, keys, noise_std)
  update = running & jnp.isfinite(step_metrics["loss"])
  keep = lambda n, o: jnp.where(update.reshape(update.shape + (1,) * (n.ndim - 1)), n, o)
  trained = {k: jax.tree.map(keep, new[k], state[k]) for k in ("params", "opt_state", "step")}
  return {**trained, "other": new["other"]}, step_metrics


def _shard_trials(tree):
  """Places a pack's state on the mesh of all devices, its trial axis over the "trials" axis
  (see rnn_research.parallel; batches go to the "data" axis)."""
  return parallel.shard_trials(tree, parallel.pack_mesh(jax.tree.leaves(tree)[0].shape[0]))


def _init_pack(configs, task: Task):
  """The pack's graphdefs (train and eval mode), eval-mode state, first optimiser and stacked
  train state, each trial's parameters initialised from its own seed."""
  models = [task.make_model(c.model, nnx.Rngs(c.seed)) for c in configs]
  models[0].eval()
  eval_graphdef, _, eval_other = nnx.split(models[0], nnx.Param, ...)
  models[0].train()
  graphdef = nnx.split(models[0], nnx.Param, ...)[0]
  splits = [nnx.split(m, nnx.Param, ...)[1:] for m in models]
  txs = [make_optimizer(c) for c in configs]  # one structure; the values live in each state
  state = _shard_trials({
      "params": _stack([p for p, _ in splits]),
      "opt_state": _stack([tx.init(p) for tx, (p, _) in zip(txs, splits)]),
      "step": jnp.zeros((len(configs),), jnp.int32), "other": _stack([o for _, o in splits])})
  return graphdef, (eval_graphdef, eval_other), txs[0], state


def _fresh_meta(workdirs: list[str]) -> dict:
  """Per-trial bookkeeping of a pack (JSON, saved with each checkpoint)."""
  size = len(workdirs)
  return {"epoch": 0, "workdirs": workdirs, "status": ["running"] * size, "epochs": [0] * size,
          "best_valid": [math.inf] * size, "best_epoch": [0] * size,
          "at_best": [{} for _ in range(size)], "bad_epochs": [0] * size,
          "diverged_step": [None] * size, "wall_time": 0.0}


def _result(meta: dict, k: int, num_params: int, task: Task) -> dict:
  result = {"num_params": num_params, "baseline_nll": task.baseline_nll,
            "epochs": meta["epochs"][k]}
  if meta["status"][k] == "diverged":
    return {**result, "status": "diverged", "diverged_step": meta["diverged_step"][k]}
  result.update(status="completed", best_epoch=meta["best_epoch"][k], **meta["at_best"][k])
  if task.bits_per_character:
    result["test_bits_per_character"] = metrics.bits_per_character(result["test_nll"])
  return result


def train_pack(configs, workdirs, *, overwrite: bool = False,
               task: Task | None = None) -> list[dict]:
  """Trains trials that differ only in PACKABLE_KEYS as one compiled program (a pack): their
  parameters and optimiser states are stacked on a leading trial axis and `train_step` is
  vmapped over it; every trial sees the same batches (the data order of the first trial's
  seed); each stops early, or diverges, on its own. Returns the results in order (see
  `train_and_evaluate`). Resuming needs the same trials in the same order; otherwise the
  unfinished ones start afresh."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  check_packable(configs)
  all_files = [Workdir(w, c, overwrite) for w, c in zip(workdirs, configs)]
  todo = [k for k, f in enumerate(all_files) if f.result() is None]
  if not todo:
    return [f.result() for f in all_files]
  configs, files = [configs[k] for k in todo], [all_files[k] for k in todo]
  config, size = configs[0], len(configs)
  task = task or make_task(config)
  graphdef, eval_model, tx, state = _init_pack(configs, task)
  num_params = sum(int(np.prod(p.shape[1:])) for p in jax.tree.leaves(state["params"]))
  keys = jnp.stack([jax.random.key(c.seed) for c in configs])
  noise_std = jnp.array([c.input_noise for c in configs], jnp.float32)
  step_fn = jax.jit(functools.partial(
      pack_step, functools.partial(train_step, graphdef, tx, task.loss)), donate_argnums=0)
  eval_fn = jax.jit(jax.vmap(functools.partial(eval_step, *eval_model, task),
                             in_axes=(0, None)))
  loader = data.Loader(task.train, config.batch_size, transform=task.transform, seed=config.seed,
                       pad_multiple=config.pad_multiple)
  checkpoints = [Checkpoints(f.path) for f in files]
  meta = _fresh_meta([str(f.path) for f in files])
  if checkpoints[0].latest_epoch() is not None:
    if checkpoints[0].meta()["workdirs"] == meta["workdirs"]:
      restored, meta = checkpoints[0].restore("latest", jax.tree.map(jnp.zeros_like, state))
      state = _shard_trials(restored)
      loader.set_state(meta.pop("loader"))
      print(f"{files[0].path}: resumed after epoch {meta['epoch']}", file=sys.stderr, flush=True)
    else:  # the checkpoint of another pack this trial led: start afresh
      checkpoints[0].discard("latest")

  bar = _progress(config.max_epochs, f"trials {files[0].path.name}"
                  + (f" +{size - 1}" if size > 1 else ""))
  bar.update(meta["epoch"])
  # Training time counts on from the checkpoint (older checkpoints did not record it).
  start = time.time() - meta.get("wall_time", 0.0)
  try:
    while meta["epoch"] < config.max_epochs and "running" in meta["status"]:
      epoch = meta["epoch"] + 1
      trained = [s == "running" for s in meta["status"]]
      losses = []
      for _ in range(loader.batches_per_epoch):
        running = np.array([s == "running" for s in meta["status"]])
        batch = parallel.shard_batch(next(loader), parallel.mesh_of(state))
        state, step_metrics = step_fn(state, batch, keys, noise_std, jnp.asarray(running))
        losses.append(np.asarray(step_metrics["loss"]))
        for k in np.flatnonzero(running & ~np.isfinite(losses[-1])):
          meta["status"][k], meta["epochs"][k] = "diverged", epoch
          meta["diverged_step"][k] = int(state["step"][k]) + 1  # its state stays before it
      valid_metrics = _evaluate(eval_fn, state["params"], task.eval_batches["validation"])
      valid = valid_metrics["nll"]
      improved = [k for k in range(size)
                  if meta["status"][k] == "running" and valid[k] < meta["best_valid"][k]]
      if improved:
        test_metrics = _evaluate(eval_fn, state["params"], task.eval_batches["test"])
      for k in np.flatnonzero([s == "running" for s in meta["status"]]):
        meta["epochs"][k] = epoch
        if k in improved:
          meta["best_valid"][k], meta["best_epoch"][k], meta["bad_epochs"][k] = valid[k], epoch, 0
          meta["at_best"][k] = {f"{split}_{name}": float(values[k])
                                for split, split_metrics in (("valid", valid_metrics),
                                                             ("test", test_metrics))
                                for name, values in split_metrics.items()}
          checkpoints[k].save("best", epoch, _take(state["params"], k),
                              {"epoch": epoch, "valid_nll": valid[k]})
        else:
          meta["bad_epochs"][k] += 1
          if meta["bad_epochs"][k] >= config.patience:
            meta["status"][k] = "completed"
      for k in np.flatnonzero(trained):
        if meta["status"][k] == "diverged":
          continue
        record = {"epoch": epoch, "step": int(state["step"][k]),
                  "train_loss": float(np.mean([loss[k] for loss in losses])),
                  **{f"valid_{name}": float(values[k]) for name, values in valid_metrics.items()},
                  "grad_norm": float(step_metrics["grad_norm"][k]),
                  "param_norm": float(step_metrics["param_norm"][k]),
                  "wall_time": time.time() - start}
        files[k].append_metrics(record, keep_through_epoch=meta["epoch"])
        _log_line(bar, f"{files[k].path} epoch {epoch}: train {record['train_loss']:.4f} valid "
                       f"{valid[k]:.4f} (best {meta['best_valid'][k]:.4f} at epoch "
                       f"{meta['best_epoch'][k]})")
      meta["epoch"], meta["wall_time"] = epoch, time.time() - start
      checkpoints[0].save("latest", epoch, state, {**meta, "loader": loader.get_state()})
      bar.update(1)
  finally:
    bar.close()
    for c in checkpoints:
      c.close()
  for k, f in enumerate(files):
    f.finish(_result(meta, k, num_params, task))
  return [f.result() for f in all_files]
