"""A trial's TensorBoard event files, <workdir>/tensorboard, for watching a sweep live:

    tensorboard --logdir sweeps/<study>/trials      # one run per trial: <variant>/<number>

Each epoch's metrics.jsonl line becomes scalars of the same names at step = epoch (train_loss,
valid_<metric>, learning_rate, grad_norm, param_norm, wall_time); the trial's result, once
finished, becomes `result/valid_<metric>` and `result/test_<metric>` (at the best epoch); the
config, flattened to dotted keys, is the trial's hyperparameters in TensorBoard's HParams view
with the result's metrics as its columns. Written with tensorboardX (no TensorFlow needed).
"""
import json
import pathlib

SUBDIR = "tensorboard"
RESULT_PREFIX = "result/"
# metrics.jsonl keys that are not metrics: the x axis and its step count.
_NOT_SCALARS = ("epoch", "step")


def require() -> None:
  """Raises an ImportError that says what to do when tensorboardX is not installed (call it
  before writing anything)."""
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as error:
    raise ImportError("config.tensorboard=True needs tensorboardX: pip install "
                      "'rnn_research[study]', or set tensorboard=False") from error


def flat_hparams(config: dict, prefix: str = "") -> dict:
  """A nested config as {dotted key: bool | int | float | str} (the types TensorBoard's HParams
  accept); lists and None as their JSON text."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(flat_hparams(value, f"{prefix}{key}."))
    elif isinstance(value, (bool, int, float, str)):
      flat[prefix + key] = value
    else:
      flat[prefix + key] = json.dumps(value)
  return flat


class TrialSummaries:
  """The event files of one trial: `epoch` per metrics.jsonl line, `finish` with its result."""

  def __init__(self, workdir, config: dict, earlier: list[dict]):
    """A writer in <workdir>/tensorboard. A resumed trial's events are written again from the
    metrics.jsonl lines of its `earlier` runs (those up to its checkpoint), and TensorBoard
    drops what those runs wrote: a killed run loses the events still queued in its writer,
    and may have written epochs after its checkpoint."""
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._writer = SummaryWriter(str(pathlib.Path(workdir) / SUBDIR), purge_step=1)
    self._hparams = flat_hparams(config)
    self._hparams_written = False
    for record in earlier:
      self.epoch(record)

  def epoch(self, record: dict) -> None:
    """Writes one epoch's metrics.jsonl line; the first of this run also writes the
    hyperparameters, with the result metrics of the line's validation metrics as columns."""
    if not self._hparams_written:
      self._write_hparams([k for k in record if k.startswith("valid_")])
    for key, value in record.items():
      if key not in _NOT_SCALARS:
        self._writer.add_scalar(key, value, record["epoch"])
    self._writer.flush()

  def finish(self, result: dict) -> None:
    """Writes the result's metrics (validation and test at the best epoch) at its last epoch,
    and ends the HParams session of a completed trial."""
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    for key, value in result.items():
      if key.startswith(("valid_", "test_")):
        self._writer.add_scalar(RESULT_PREFIX + key, value, result["epochs"])
    if result["status"] == "completed":
      self._writer.file_writer.add_summary(summary.hparams(self._hparams, {})[2])
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()

  def _write_hparams(self, valid_keys: list[str]) -> None:
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    metrics = [RESULT_PREFIX + split + key.removeprefix("valid")
               for key in valid_keys for split in ("valid", "test")]
    experiment, session_start, _ = summary.hparams(self._hparams, dict.fromkeys(metrics))
    self._writer.file_writer.add_summary(experiment)
    self._writer.file_writer.add_summary(session_start)
    self._hparams_written = True
