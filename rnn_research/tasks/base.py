"""What a trial trains: a `Task` bundles the data, the model and the loss of one task shape, so the
training loop (`rnn_research.train`) runs any of them."""
import dataclasses
from typing import Callable

Batch = dict  # numpy arrays: "inputs", "lengths", "mask" and what the task's transform adds


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
