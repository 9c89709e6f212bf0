"""Synchronized many-to-many (tagging): a label for every input step.

    model = SequenceTagger(model_config, vocab_size, num_tags, embed=True, rngs=rngs)
    logits = model(ids, lengths)          # ids [B, T] -> logits [B, T, C]

Unlike next-step prediction, the label of step t may depend on later inputs, so the backbone may
be bidirectional (model config `bidirectional=True`).
"""
import jax.numpy as jnp
import optax
from flax import nnx

from rnn_research.models.encoder import SequenceEncoder


class SequenceTagger(nnx.Module):
  """Encoder + a linear read-out at every step.

  Args:
    config: model config (see `models.encoder`).
    in_features: D of float inputs, or the vocabulary size for token ids (`embed=True`).
    num_tags: C, the labels of a step.
    embed: inputs are token ids.
  """

  def __init__(self, config, in_features: int, num_tags: int, *, embed: bool = False,
               rngs: nnx.Rngs):
    if not isinstance(num_tags, int) or num_tags < 2:
      raise ValueError(f"num_tags must be an int >= 2, got {num_tags!r}")
    self.encoder = SequenceEncoder(config, in_features, embed=embed, rngs=rngs)
    self.head = nnx.Linear(self.encoder.output_size, num_tags, rngs=rngs)

  def __call__(self, inputs, lengths=None):
    """inputs [B, T] ids or [B, T, D] -> logits [B, T, C]."""
    return self.head(self.encoder(inputs, lengths)[0])


def tagging_loss(logits, tags, mask):
  """(cross-entropy summed over the valid steps, their number); logits [B, T, C], tags and
  mask [B, T]."""
  if tags.shape != logits.shape[:2] or mask.shape != logits.shape[:2]:
    raise ValueError(f"tags and mask must be [batch, time]={tuple(logits.shape[:2])}, got "
                     f"{tuple(tags.shape)} and {tuple(mask.shape)}")
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, tags)
  return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(mask)


def correct_steps(logits, tags, mask):
  """(valid steps whose argmax is the tag, valid steps)."""
  hits = (jnp.argmax(logits, -1) == tags) & mask
  return jnp.sum(hits), jnp.sum(mask)
