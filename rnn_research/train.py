"""Training one trial: `train_and_evaluate(config, workdir)`.

Any task of `rnn_research.tasks` (`config.task`; next-step prediction on piano rolls or
characters by default) with the Odyssey paper's optimiser (SGD with Nesterov momentum; Adam as an
option), Gaussian input noise in training, optional clipping by global norm, and early stopping
on the validation NLL (the task's loss). Test metrics are the ones at the best validation epoch.

The workdir holds everything: config.json, env.json (what each run of it ran with: see
rnn_research.provenance), checkpoints/{latest,best} (orbax, with the data position),
metrics.jsonl (one line per epoch), tensorboard/ (the same as TensorBoard events, with the
config as hyperparameters: event_files.py) and, once finished, result.json. Running again
with the same workdir resumes where it stopped; a finished workdir returns its result at once.
A non-finite loss ends the trial as "diverged" with the step.
"""
import dataclasses
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

from rnn_research import compilation, event_files, metrics, parallel, provenance, tasks
from rnn_research.checkpoint import Checkpoints
from rnn_research.tasks import Task, make_task
from rnn_research.workdir import Workdir, differing_keys

OPTIMIZERS = ("sgd_nesterov", "adam")
# What may differ between the trials of a pack (see train_pack).
PACKABLE_KEYS = ("learning_rate", "momentum", "input_noise", "seed")


def default_config(task: str = "next_step", backbone: str = "lstm") -> ml_collections.ConfigDict:
  """Every key a trial of `task` with `backbone` reads, with defaults; studies override what they
  search. The task's options (task_options) and the model keys of its head and backbone are
  the ones they declare (`tasks.complete`)."""
  return tasks.complete(ml_collections.ConfigDict(dict(
      task=task,                # a key of rnn_research.tasks.MODULES
      task_options={},          # what the task reads besides the keys below
      data="music21",           # the dataset (next_step: a key of tasks.next_step.DATASETS)
      data_path="",             # the .pickle/.mat file of a Boulanger-Lewandowski set
                                # (data="jsb_standard", "nottingham", "muse_data", "piano_midi_de")
      data_dir="",              # TFDS data dir ("" = $RNN_RESEARCH_DATA_DIR or TFDS's default)
      model=dict(backbone=backbone),
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
      length_buckets=0,         # > 0: pad training batches to one of this many lengths fitted
                                # to the training data instead (data.fit_pad_lengths)
      tensorboard=True,         # TensorBoard event files in <workdir>/tensorboard (event_files.py)
  )))


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


def _progress(total: int, description: str, show: bool):
  """(a tqdm bar on a terminal, a function that logs an epoch's line where there is no bar);
  with `show` False (a launcher shows the progress of all its workers), neither."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=total, desc=description, disable=not (show and sys.stderr.isatty()),
             leave=False)

  def log(message: str) -> None:
    if show and bar.disable:
      print(message, file=sys.stderr, flush=True)

  return bar, log


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


def _where_trials(mask, new, old):
  """Per trial (mask [P]), the leaves of `new` where mask is set, else those of `old`."""
  keep = lambda n, o: jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(keep, new, old)


TRAIN_STATE_KEYS = ("params", "opt_state", "step", "other")


def pack_step(step_fn, state, batch, keys, noise_std):
  """`train_step` of every trial of a pack at once (vmap over the leading trial axis, the batch
  shared). state: the train state of `train_step` with every leaf [P, ...], and "running" [P]
  bool. A trial that is not running keeps its state; one whose loss is not finite keeps its
  state and stops running (it diverged)."""
  train_state = {k: state[k] for k in TRAIN_STATE_KEYS}
  new, step_metrics = jax.vmap(step_fn, in_axes=(0, None, 0, 0))(train_state, batch, keys,
                                                                 noise_std)
  update = state["running"] & jnp.isfinite(step_metrics["loss"])
  trained = _where_trials(update, {k: new[k] for k in ("params", "opt_state", "step")},
                          {k: state[k] for k in ("params", "opt_state", "step")})
  return {**trained, "other": new["other"], "running": update}, step_metrics


def _shard_trials(tree):
  """Places a pack's state on the mesh of all devices, its trial axis over the "trials" axis
  (see rnn_research.parallel; batches go to the "data" axis)."""
  return parallel.shard_trials(tree, parallel.pack_mesh(jax.tree.leaves(tree)[0].shape[0]))


@dataclasses.dataclass
class TrialProgress:
  """One trial's early stopping (JSON, saved with the pack's checkpoints)."""
  workdir: str
  status: str = "running"  # then "completed" (stopped early, or out of epochs) or "diverged"
  epochs: int = 0  # epochs trained
  best_valid: float = math.inf
  best_epoch: int = 0
  bad_epochs: int = 0  # epochs since the best one
  at_best: dict = dataclasses.field(default_factory=dict)  # valid_<metric> at the best epoch
  diverged_step: int | None = None


@dataclasses.dataclass
class PackProgress:
  """Where a pack stands after `epoch` epochs (JSON, saved with its checkpoints)."""
  trials: list[TrialProgress]
  epoch: int = 0
  wall_time: float = 0.0  # seconds of training so far, across resumes

  @property
  def running(self) -> np.ndarray:
    return np.array([t.status == "running" for t in self.trials])

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, record: dict) -> "PackProgress":
    return cls(**{**record, "trials": [TrialProgress(**t) for t in record["trials"]]})


class _Pack:
  """The compiled programs and initial state of a pack of trials (see `train_pack`)."""

  def __init__(self, configs, task: Task):
    self.task = task
    models = [task.make_model(c.model, nnx.Rngs(c.seed)) for c in configs]
    models[0].eval()
    eval_graphdef, _, eval_other = nnx.split(models[0], nnx.Param, ...)
    models[0].train()
    graphdef = nnx.split(models[0], nnx.Param, ...)[0]
    splits = [nnx.split(m, nnx.Param, ...)[1:] for m in models]
    txs = [make_optimizer(c) for c in configs]  # one structure; the values live in each state
    self.initial_state = _shard_trials({
        "params": _stack([p for p, _ in splits]),
        "opt_state": _stack([tx.init(p) for tx, (p, _) in zip(txs, splits)]),
        "step": jnp.zeros((len(configs),), jnp.int32), "other": _stack([o for _, o in splits]),
        "running": jnp.ones((len(configs),), bool)})
    self.num_params = sum(int(np.prod(p.shape[1:]))
                          for p in jax.tree.leaves(self.initial_state["params"]))
    self.keys = jnp.stack([jax.random.key(c.seed) for c in configs])
    self.noise_std = jnp.array([c.input_noise for c in configs], jnp.float32)
    self.step = compilation.PerShape(functools.partial(
        pack_step, functools.partial(train_step, graphdef, txs[0], task.loss)),
        shape_argnum=1, donate_argnums=0)
    self.eval = compilation.PerShape(jax.vmap(functools.partial(
        eval_step, eval_graphdef, eval_other, task), in_axes=(0, None)), shape_argnum=1)

  def train_epoch(self, state, loader):
    """One pass over the training batches -> (state, per-step losses [steps, P], the last
    step's metrics); the host waits for the device once, at the end."""
    mesh = parallel.mesh_of(state)
    losses = []
    for _ in range(loader.batches_per_epoch):
      batch = parallel.shard_batch(next(loader), mesh)
      state, step_metrics = self.step(state, batch, self.keys, self.noise_std)
      losses.append(step_metrics["loss"])
    return state, np.stack([np.asarray(loss) for loss in losses]), jax.tree.map(np.asarray,
                                                                                step_metrics)

  def precompile(self, state, batches) -> None:
    """Compiles the training step for each shape of `batches` and the evaluation for each of
    the validation and test batches (shared with other processes: `compilation.precompile`)."""
    mesh = parallel.mesh_of(state)
    compilation.precompile(
        [(self.step, (state, parallel.shard_batch(b, mesh), self.keys, self.noise_std))
         for b in batches] +
        [(self.eval, (state["params"], parallel.shard_batch(b, mesh)))
         for split in ("validation", "test") for b in self.task.eval_batches[split]])

  def evaluate(self, params, split: str) -> dict:
    """{name: [P] the split's mean}, params stacked on the trial axis."""
    return _evaluate(self.eval, params, self.task.eval_batches[split])


def _end_epoch(progress: PackProgress, state, valid: dict, patience: int) -> np.ndarray:
  """Records a trained epoch: the trials that diverged in it, then early stopping on the
  validation NLL. Returns which trials improved ([P] bool)."""
  progress.epoch += 1
  diverged = progress.running & ~np.asarray(state["running"])
  for k in np.flatnonzero(diverged):
    trial = progress.trials[k]
    trial.status, trial.epochs = "diverged", progress.epoch
    trial.diverged_step = int(state["step"][k]) + 1  # its state stays before that step
  improved = np.zeros(len(progress.trials), bool)
  for k in np.flatnonzero(progress.running):
    trial = progress.trials[k]
    trial.epochs = progress.epoch
    if valid["nll"][k] < trial.best_valid:
      trial.best_valid, trial.best_epoch, trial.bad_epochs = float(valid["nll"][k]), trial.epochs, 0
      trial.at_best = {f"valid_{name}": float(values[k]) for name, values in valid.items()}
      improved[k] = True
    else:
      trial.bad_epochs += 1
      if trial.bad_epochs >= patience:
        trial.status = "completed"
  return improved


@jax.jit
def _keep_best(state, best, improved, running):
  """The parameters of the trials that `improved` ([P] bool) become their best ones; the
  trials not `running` ([P] bool) any more stop training."""
  return ({**state, "running": state["running"] & running},
          _where_trials(improved, state["params"], best))


def _epoch_records(progress: PackProgress, trained, epoch_losses, valid: dict, last_metrics,
                   state, wall_time: float) -> dict:
  """{trial index: its metrics.jsonl line} of the trials trained this epoch, but those that
  diverged in it."""
  learning_rates = np.asarray(optax.tree.get(state["opt_state"], "learning_rate"))
  return {k: {"epoch": progress.epoch, "step": int(state["step"][k]),
              "train_loss": float(np.mean(epoch_losses[:, k])),
              **{f"valid_{name}": float(values[k]) for name, values in valid.items()},
              "learning_rate": float(learning_rates[k]),
              "grad_norm": float(last_metrics["grad_norm"][k]),
              "param_norm": float(last_metrics["param_norm"][k]), "wall_time": wall_time}
          for k in np.flatnonzero(trained) if progress.trials[k].status != "diverged"}


def _result(trial: TrialProgress, test: dict, k: int, num_params: int, task: Task) -> dict:
  result = {"num_params": num_params, "baseline_nll": task.baseline_nll, "epochs": trial.epochs}
  if trial.status == "diverged":
    return {**result, "status": "diverged", "diverged_step": trial.diverged_step}
  result.update(status="completed", best_epoch=trial.best_epoch, **trial.at_best,
                **{f"test_{name}": float(values[k]) for name, values in test.items()})
  if task.bits_per_character:
    result["test_bits_per_character"] = metrics.bits_per_character(result["test_nll"])
  return result


def _pad_lengths(config, task: Task) -> tuple[int, ...]:
  """The padded lengths of the training batches (config.length_buckets); () for
  config.pad_multiple."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  if config.length_buckets < 0:
    raise ValueError(f"length_buckets must be >= 0, got {config.length_buckets!r}")
  if not config.length_buckets:
    return ()
  return data.fit_pad_lengths(data.example_lengths(task.train, task.transform),
                              config.length_buckets)


def _resume(checkpoints: list[Checkpoints], state, best, loader, progress: PackProgress):
  """(state, best, progress) from the pack's `latest` checkpoint, with the loader's position;
  as they are when there is none, or when it is another pack's (which is discarded)."""
  if checkpoints[0].latest_epoch() is None:
    return state, best, progress
  saved = [t["workdir"] for t in checkpoints[0].meta().get("trials", ())]
  if saved != [t.workdir for t in progress.trials]:  # another pack this trial led
    checkpoints[0].discard("latest")
    return state, best, progress
  restored, meta = checkpoints[0].restore(
      "latest", jax.tree.map(jnp.zeros_like, {"state": state, "best": best}))
  loader.set_state(meta.pop("loader"))
  progress = PackProgress.from_json(meta)
  print(f"{progress.trials[0].workdir}: resumed after epoch {progress.epoch}", file=sys.stderr,
        flush=True)
  return _shard_trials(restored["state"]), _shard_trials(restored["best"]), progress


def _epoch(pack: _Pack, state, best, loader, progress: PackProgress, patience: int,
           start: float):
  """Trains an epoch, evaluates it and stops trials early -> (state, best, validation
  metrics, {trial index: its metrics.jsonl line})."""
  trained = progress.running
  state, epoch_losses, last_metrics = pack.train_epoch(state, loader)
  valid = pack.evaluate(state["params"], "validation")
  improved = _end_epoch(progress, state, valid, patience)
  state, best = _keep_best(state, best, improved, progress.running)
  progress.wall_time = time.time() - start
  return state, best, valid, _epoch_records(progress, trained, epoch_losses, valid,
                                            last_metrics, state, progress.wall_time)


def _replay(on_epoch, files: list[Workdir], indices: list[int],
            through_epoch: int | None = None) -> None:
  """Calls `on_epoch` with the metrics.jsonl lines that earlier runs of the workdirs wrote (the
  record of a retried trial, which resumes from its checkpoint, gets every epoch)."""
  for k, f in zip(indices, files):
    for record in f.metrics(through_epoch):
      on_epoch(k, record)


class _Outputs:
  """Where the trials of a pack report (index k: the pack's k-th trial): metrics.jsonl and
  result.json in each workdir, TensorBoard event files (config.tensorboard; from process 0
  only), the caller's `on_epoch(index in train_pack's arguments, metrics.jsonl line)`, and a
  log line per epoch."""

  def __init__(self, files: list[Workdir], indices: list[int], configs, on_epoch, log,
               epochs_done: int):
    self._files, self._indices, self._on_epoch, self._log = files, indices, on_epoch, log
    self._event_files = [event_files.TrialSummaries(f.path, c.to_dict(), f.metrics(epochs_done))
                       for f, c in zip(files, configs)
                       if c.tensorboard and jax.process_index() == 0]
    if on_epoch:
      _replay(on_epoch, files, indices, through_epoch=epochs_done)

  def epoch(self, progress: PackProgress, valid: dict, records: dict) -> None:
    for k, record in records.items():
      trial = progress.trials[k]
      self._files[k].append_metrics(record, keep_through_epoch=progress.epoch - 1)
      if self._event_files:
        self._event_files[k].epoch(record)
      if self._on_epoch:
        self._on_epoch(self._indices[k], record)
      self._log(f"{trial.workdir} epoch {progress.epoch}: train {record['train_loss']:.4f} "
                f"valid {valid['nll'][k]:.4f} (best {trial.best_valid:.4f} at epoch "
                f"{trial.best_epoch})")

  def finish(self, results: list[dict]) -> None:
    for k, (f, result) in enumerate(zip(self._files, results)):
      f.finish(result)
      if self._event_files:
        self._event_files[k].finish(result)

  def __enter__(self) -> "_Outputs":
    return self

  def __exit__(self, *exc_info) -> None:
    for writer in self._event_files:
      writer.close()


def _save_best(checkpoints: list[Checkpoints], progress: PackProgress, best) -> None:
  """Each trial's `best` checkpoint: its parameters at its best epoch."""
  for k, (trial, c) in enumerate(zip(progress.trials, checkpoints)):
    if trial.best_epoch and c.latest_epoch("best") != trial.best_epoch:
      if c.latest_epoch("best") is not None:  # of an earlier run of this workdir
        c.discard("best")
      c.save("best", trial.best_epoch, _take(best, k),
             {"epoch": trial.best_epoch, "valid_nll": trial.best_valid})


def train_pack(configs, workdirs, *, overwrite: bool = False, task: Task | None = None,
               on_epoch=None, show_progress: bool = True) -> list[dict]:
  """Trains trials that differ only in PACKABLE_KEYS as one compiled program (a pack): their
  parameters and optimiser states are stacked on a leading trial axis and `train_step` is
  vmapped over it; every trial sees the same batches (the data order of the first trial's
  seed); each stops early, or diverges, on its own. Returns the results in order (see
  `train_and_evaluate`). Resuming needs the same trials in the same order; otherwise the
  unfinished ones start afresh.

  Each epoch trains, evaluates the validation split and checkpoints the pack (`latest`: train
  state, the parameters at each trial's best epoch, progress and data position); when every
  trial has stopped, the test split is evaluated once at each trial's best parameters, and
  each trial's `best` checkpoint and result are written. `on_epoch(k, line)` is called with
  each epoch's metrics.jsonl line of the k-th trial, those of earlier runs of its workdir
  first. `show_progress` False: no bar and no line per epoch (a launcher shows the progress)."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  check_packable(configs)
  configs = [tasks.complete(c) for c in configs]  # config.json: every key the trial reads
  if configs[0].tensorboard:
    event_files.require()
  all_files = [Workdir(w, c, overwrite, normalise=tasks.complete_record)
               for w, c in zip(workdirs, configs)]
  todo = [k for k, f in enumerate(all_files) if f.result() is None]
  finished = [k for k in range(len(all_files)) if k not in todo]
  if on_epoch:
    _replay(on_epoch, [all_files[k] for k in finished], finished)
  if not todo:
    return [f.result() for f in all_files]
  configs, files = [configs[k] for k in todo], [all_files[k] for k in todo]
  if jax.process_index() == 0:  # one env.json record per run, not per process
    for c, f in zip(configs, files):
      provenance.record(f.path, c.to_dict())
  config = configs[0]
  pack = _Pack(configs, task or make_task(config))
  loader = data.Loader(pack.task.train, config.batch_size, transform=pack.task.transform,
                       seed=config.seed, pad_multiple=config.pad_multiple,
                       pad_lengths=_pad_lengths(config, pack.task))
  checkpoints = [Checkpoints(f.path) for f in files]
  best = jax.tree.map(jnp.copy, pack.initial_state["params"])  # the step donates state's
  state, best, progress = _resume(checkpoints, pack.initial_state, best, loader,
                                  PackProgress([TrialProgress(str(f.path)) for f in files]))
  pack.precompile(state, loader.batch_per_shape())
  bar, log = _progress(config.max_epochs, f"trials {files[0].path.name}"
                       + (f" +{len(files) - 1}" if len(files) > 1 else ""), show_progress)
  bar.update(progress.epoch)
  start = time.time() - progress.wall_time  # training time counts on across resumes
  with _Outputs(files, todo, configs, on_epoch, log, progress.epoch) as outputs:
    try:
      while progress.epoch < config.max_epochs and progress.running.any():
        state, best, valid, records = _epoch(pack, state, best, loader, progress,
                                             config.patience, start)
        outputs.epoch(progress, valid, records)
        checkpoints[0].save("latest", progress.epoch, {"state": state, "best": best},
                            {**progress.to_json(), "loader": loader.get_state()})
        bar.update(1)
      test = pack.evaluate(best, "test")
      _save_best(checkpoints, progress, best)
    finally:
      bar.close()
      for c in checkpoints:
        c.close()  # waits for the checkpoints to be written: then the results
    outputs.finish([_result(trial, test, k, pack.num_params, pack.task)
                    for k, trial in enumerate(progress.trials)])
  return [f.result() for f in all_files]
