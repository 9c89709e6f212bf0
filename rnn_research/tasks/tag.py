"""Synchronized many-to-many tagging (`config.task = "tag"`): chorale harmonisation, the bass
pitch (or a rest) at every quarter note from the soprano line (`data.harmonisation`); reported
as NLL per step and per-step accuracy.

config.data: "music21" (built-in JSB Chorales) or "standard" (config.data_path). Set
model.bidirectional to let every step's label depend on the whole soprano line.
config.task_options.max_train: use at most this many training chorales (0, the default: all).
The baseline NLL is the test cross-entropy of the training split's bass-note frequencies.
"""
import numpy as np

from rnn_research.models.encoder import CONFIG_KEYS as MODEL_KEYS
from rnn_research.models.labelling import SequenceTagger, correct, label_loss
from rnn_research.tasks import register
from rnn_research.tasks.base import Task, eval_batches
from rnn_research.tasks.next_step import DATASETS


def frequency_nll(train, test) -> float:
  """Test cross-entropy (nats per step) of the bass frequencies of `train` (add-one smoothed);
  train/test: sources of {"roll"} examples."""
  from rnn_research.data import harmonisation  # pylint: disable=g-import-not-at-top
  outer_voices, classes = harmonisation.outer_voices, harmonisation.NUM_CLASSES
  counts = np.ones(classes)
  for i in range(len(train)):
    counts += np.bincount(outer_voices(train[i]["roll"])[1], minlength=classes)
  logp = np.log(counts / counts.sum())
  bass = np.concatenate([outer_voices(test[i]["roll"])[1] for i in range(len(test))])
  return float(-logp[bass].mean())


def tagging_task(splits: dict, config) -> Task:
  """The Task of sources of {"roll": [T, 88]} chorales per split."""
  from rnn_research.data import harmonisation  # pylint: disable=g-import-not-at-top
  classes = harmonisation.NUM_CLASSES
  transform = harmonisation.soprano_to_bass

  def make_model(model_config, rngs):
    return SequenceTagger(model_config, classes, classes, embed=True, rngs=rngs)

  def loss(model, batch):
    return label_loss(model(batch["inputs"], batch["lengths"]), batch["targets"], batch["mask"])

  def metrics(model, batch):
    logits = model(batch["inputs"], batch["lengths"])
    return {"accuracy": correct(logits, batch["targets"], batch["mask"])}

  return Task(splits["train"], eval_batches(splits, config, transform), transform, make_model,
              loss, metrics, baseline_nll=frequency_nll(splits["train"], splits["test"]))


@register("tag", options=dict(max_train=0), model=MODEL_KEYS, data=("music21", "standard"))
def tag_task(config) -> Task:
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  options = dict(data_dir=config.data_dir or None, path=config.data_path or None)
  splits = {split: data.load(DATASETS[config.data][0], split, **options)
            for split in ("train", "validation", "test")}
  max_train = config.task_options.max_train
  if max_train:
    splits["train"] = [splits["train"][i] for i in range(min(max_train, len(splits["train"])))]
  return tagging_task(splits, config)
