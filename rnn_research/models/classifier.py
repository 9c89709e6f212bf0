"""Many-to-one: a backbone reads the whole sequence and a linear head classifies its summary.

    model = SequenceClassifier(model_config, vocab_size, num_classes, embed=True, rngs=rngs)
    logits = model(ids, lengths)          # ids [B, T] -> logits [B, C]
    vectors = model.features(ids, lengths)  # the summary [B, E] the head reads

The summary is the encoder's pooling of its outputs (`models.encoder`: the last valid step by
default; with a bidirectional encoder, the forward direction's last step and the backward
direction's first).
"""
import jax.numpy as jnp
import optax
from flax import nnx

from rnn_research.models.encoder import SequenceEncoder


class SequenceClassifier(nnx.Module):
  """Encoder + linear head on its summary.

  Args:
    config: model config (see `models.encoder`).
    in_features: D of float inputs, or the vocabulary size for token ids (`embed=True`).
    num_classes: C, the classes of the head.
    embed: inputs are token ids.
  """

  def __init__(self, config, in_features: int, num_classes: int, *, embed: bool = False,
               rngs: nnx.Rngs):
    if not isinstance(num_classes, int) or num_classes < 2:
      raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    self.encoder = SequenceEncoder(config, in_features, embed=embed, rngs=rngs)
    self.head = nnx.Linear(self.encoder.output_size, num_classes, rngs=rngs)

  def features(self, inputs, lengths=None):
    """The summary vector [B, E] of each sequence."""
    return self.encoder(inputs, lengths)[1]

  def __call__(self, inputs, lengths=None):
    """inputs [B, T] ids or [B, T, D] -> logits [B, C]."""
    return self.head(self.features(inputs, lengths))


def classification_loss(logits, labels):
  """(cross-entropy summed over the batch, batch size); logits [B, C], labels [B] int."""
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"labels must be [batch]=({logits.shape[0]},), got {tuple(labels.shape)}")
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(losses), jnp.asarray(labels.shape[0])


def correct(logits, labels):
  """(number of rows whose argmax is the label, rows)."""
  return jnp.sum(jnp.argmax(logits, -1) == labels), jnp.asarray(labels.shape[0])
