"""What a trial trains: a `Task` bundles the data, the model and the loss of one task shape, so the
training loop (`rnn_research.train`) runs any of them."""
import dataclasses
from typing import Callable


def eval_batches(sources, config, transform=None, pad_multiple: int | None = None) -> dict:
  """{"validation": [batch], "test": [batch]}: each split of `sources` sorted by length (a
  batch then holds sequences of similar length, and the recurrence stops at its longest), in
  batches of config.eval_batch_size padded to a multiple of `pad_multiple` (default
  config.pad_multiple). A split's metric is a sum over its examples, so order does not
  matter."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top  (heavy, lazy)
  pad_multiple = config.pad_multiple if pad_multiple is None else pad_multiple
  return {split: list(data.Loader(sources[split], config.eval_batch_size, transform=transform,
                                  shuffle=False, num_epochs=1, pad_multiple=pad_multiple,
                                  bucket_batches=-(-len(sources[split]) // config.eval_batch_size)))
          for split in ("validation", "test")}


@dataclasses.dataclass
class Task:
  """The data, model and loss of one trial.

  Attributes:
    train: random-access source (len, __getitem__) of raw training examples.
    eval_batches: {"validation": [batch], "test": [batch]}, padded, in order.
    transform: raw example -> example for `rnn_research.data.Loader`.
    make_model: (model_config, rngs) -> nnx.Module.
    loss: (model, batch) -> (sum, count): the objective summed over the batch's scored positions
      (an NLL); training minimises sum / count, early stopping and the result use it.
    metrics: optional (model, batch) -> {name: (sum, count)}, further evaluation metrics reported
      per split as valid_<name> and test_<name> (e.g. accuracy).
    baseline_nll: a reference model's test NLL for the report, if there is one.
    bits_per_character: the result adds test_bits_per_character (the NLL is per character).
  """
  train: object
  eval_batches: dict
  transform: Callable
  make_model: Callable
  loss: Callable
  metrics: Callable | None = None
  baseline_nll: float | None = None
  bits_per_character: bool = False
