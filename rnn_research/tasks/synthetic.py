"""The synthetic long-range tasks of `rnn_research.data.synthetic` as trainable tasks:

- "adding": regression. The backbone reads the [T, 2] inputs (values, markers); a linear read-out
  of its last step predicts the sum of the two marked values. The objective (reported as the
  trial's `valid_nll`/`test_nll`) is the mean squared error; predicting the mean scores 1/6.
- "copy": tagging of token ids. The backbone reads the embedded ids; a softmax at every step
  predicts the target id (blanks, then the ten copied symbols). The objective is the
  cross-entropy per step; the best memoryless strategy scores 10 ln 8 / (T + 20). Also reported:
  `accuracy`, the fraction of the ten copied symbols predicted right (argmax).

`config.task_options` (OPTIONS holds the defaults): length (T), train_size, eval_size. The data
are fixed by the split (seeds 0, 1, 2 for train, validation, test), the same for every trial.
"""
import jax.numpy as jnp
from flax import nnx

from rnn_research import metrics
from rnn_research.data import synthetic
from rnn_research.backbones import make_backbone
from rnn_research.models import NextStepModel
from rnn_research.tasks import register
from rnn_research.tasks.base import Task, eval_batches

SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
OPTIONS = dict(length=100, train_size=10000, eval_size=1000)
COPY_VOCABULARY = synthetic.COPY_DELIMITER + 1  # blank, 8 symbols, delimiter


class LastStepRegressor(nnx.Module):
  """A backbone and a linear read-out of each sequence's last valid step: [B, T, D] -> [B]."""

  def __init__(self, config, in_features: int, *, rngs: nnx.Rngs):
    self.backbone = make_backbone(config, in_features, rngs)
    self.head = nnx.Linear(self.backbone.output_size, 1, rngs=rngs)

  def __call__(self, inputs, lengths):
    ys, _ = self.backbone(inputs, lengths=lengths)
    last = jnp.take_along_axis(ys, (jnp.asarray(lengths) - 1)[:, None, None], axis=1)[:, 0]
    return self.head(last)[:, 0]


def _options(config) -> dict:
  values = {name: config.task_options[name] for name in OPTIONS}
  for name, value in values.items():
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"task_options.{name} must be a positive int, got {value!r}")
  return values


def _sources(task: str, options: dict) -> dict:
  sizes = {"train": options["train_size"], "validation": options["eval_size"],
           "test": options["eval_size"]}
  return {split: synthetic.SyntheticSource(task, options["length"], sizes[split], seed)
          for split, seed in SPLIT_SEEDS.items()}


def _squared_error(model, batch):
  errors = model(batch["inputs"], batch["lengths"]) - batch["targets"]
  return jnp.sum(errors ** 2), errors.shape[0]


@register("adding", options=OPTIONS)
def adding_task(config) -> Task:
  sources = _sources("adding", _options(config))
  return Task(sources["train"], eval_batches(sources, config, pad_multiple=1), transform=None,
              make_model=lambda model_config, rngs: LastStepRegressor(model_config, 2, rngs=rngs),
              loss=_squared_error, baseline_nll=synthetic.adding_baseline())


def _copy_loss(model, batch):
  logits = model(batch["inputs"], batch["lengths"])
  return metrics.character_nll(logits, batch["targets"], batch["mask"])


def _copy_accuracy(model, batch):
  """{"accuracy": (right copied symbols, copied symbols)}: the last COPY_SPAN steps."""
  logits = model(batch["inputs"], batch["lengths"])
  steps = jnp.arange(logits.shape[1])[None, :]
  lengths = jnp.asarray(batch["lengths"])[:, None]
  scored = (steps >= lengths - synthetic.COPY_SPAN) & (steps < lengths)
  right = (jnp.argmax(logits, -1) == batch["targets"]) & scored
  return {"accuracy": (jnp.sum(right), jnp.sum(scored))}


@register("copy", options=OPTIONS)
def copy_task(config) -> Task:
  options = _options(config)
  sources = _sources("copy", options)
  return Task(sources["train"], eval_batches(sources, config, pad_multiple=1), transform=None,
              make_model=lambda model_config, rngs: NextStepModel(
                  model_config, COPY_VOCABULARY, COPY_VOCABULARY, embed=True, rngs=rngs),
              loss=_copy_loss, metrics=_copy_accuracy,
              baseline_nll=synthetic.copy_baseline(options["length"]))

