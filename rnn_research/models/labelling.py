"""Labels read off an encoder by a linear head: one per sequence (many-to-one classification,
from the encoder's summary) or one per step (synchronized many-to-many tagging, from its output
at every step).

    model = SequenceClassifier(model_config, vocab_size, num_classes, embed=True, rngs=rngs)
    logits = model(ids, lengths)            # ids [B, T] -> logits [B, C]
    vectors = model.features(ids, lengths)  # the summary [B, E] the head reads
    model = SequenceTagger(model_config, vocab_size, num_tags, embed=True, rngs=rngs)
    logits = model(ids, lengths)            # ids [B, T] -> logits [B, T, C]

The summary is the encoder's pooling of its outputs (`models.encoder`: the last valid step by
default; with a bidirectional encoder, the forward direction's last step and the backward
direction's first). A tag may depend on later inputs, so a tagger's backbone may be
bidirectional (model config `bidirectional=True`).
"""
from typing import ClassVar

import jax.numpy as jnp
import optax
from flax import nnx

from rnn_research.models.encoder import SequenceEncoder


class _Labeller(nnx.Module):
  """Encoder + linear head on its summary (PER_STEP False) or on every step's output (True).

  Args:
    config: model config (see `models.encoder`).
    in_features: D of float inputs, or the vocabulary size for token ids (`embed=True`).
    num_labels: C, the labels the head chooses from (named LABELS in errors).
    embed: inputs are token ids.
  """
  PER_STEP: ClassVar[bool]
  LABELS: ClassVar[str]

  def __init__(self, config, in_features: int, num_labels: int, *, embed: bool = False,
               rngs: nnx.Rngs):
    if not isinstance(num_labels, int) or num_labels < 2:
      raise ValueError(f"{self.LABELS} must be an int >= 2, got {num_labels!r}")
    self.encoder = SequenceEncoder(config, in_features, embed=embed, rngs=rngs)
    self.head = nnx.Linear(self.encoder.output_size, num_labels, rngs=rngs)

  def features(self, inputs, lengths=None):
    """What the head reads: every step's output [B, T, E] (tagging) or the summary [B, E]."""
    outputs, summary = self.encoder(inputs, lengths)
    return outputs if self.PER_STEP else summary

  def __call__(self, inputs, lengths=None):
    """inputs [B, T] ids or [B, T, D] -> logits [B, T, C] (tagging) or [B, C]."""
    return self.head(self.features(inputs, lengths))


class SequenceClassifier(_Labeller):
  """A label per sequence (see `_Labeller`; num_labels is num_classes)."""
  PER_STEP, LABELS = False, "num_classes"


class SequenceTagger(_Labeller):
  """A label per step (see `_Labeller`; num_labels is num_tags)."""
  PER_STEP, LABELS = True, "num_tags"


def _labelled(logits, labels, mask):
  """The mask of the labelled positions [...] (all of them when mask is None), checked."""
  if labels.shape != logits.shape[:-1] or (mask is not None and mask.shape != labels.shape):
    raise ValueError(f"labels (and mask) must have the shape of the logits without their last "
                     f"axis, {tuple(logits.shape[:-1])}, got {tuple(labels.shape)}"
                     + ("" if mask is None else f" and {tuple(mask.shape)}"))
  return jnp.ones(labels.shape, bool) if mask is None else mask


def label_loss(logits, labels, mask=None):
  """(cross-entropy summed over the labelled positions, their number); logits [..., C], labels
  [...] int, mask [...] bool (None: every position)."""
  mask = _labelled(logits, labels, mask)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(mask)


def correct(logits, labels, mask=None):
  """(labelled positions whose argmax is the label, labelled positions)."""
  mask = _labelled(logits, labels, mask)
  return jnp.sum((jnp.argmax(logits, -1) == labels) & mask), jnp.sum(mask)
