"""Losses and evaluation sums for next-step prediction. Each returns (sum, count) over the
scored positions so that a split's metric is one division after summing over its batches.

Shapes: logits/targets [B, T, K] (piano rolls: K = 88 keys) or logits [B, T, V] with integer
targets [B, T] (characters); mask [B, T] bool, True where a position is scored.
"""
import math

import jax
import jax.numpy as jnp
import optax


def scored_frames(mask: jax.Array) -> jax.Array:
  """The standard piano-roll evaluation leaves each sequence's first frame unscored (it has no
  past to predict it from)."""
  return jnp.asarray(mask).at[:, 0].set(False)


def piano_roll_nll(logits, targets, mask):
  """Independent sigmoids per key: (NLL in nats summed over keys and scored frames, frames)."""
  per_frame = optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
  return jnp.sum(jnp.where(mask, per_frame, 0.0)), jnp.sum(mask)


def character_nll(logits, targets, mask):
  """Softmax over characters: (NLL in nats summed over scored characters, characters)."""
  per_char = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return jnp.sum(jnp.where(mask, per_char, 0.0)), jnp.sum(mask)


def bits_per_character(nats_per_character: float) -> float:
  return nats_per_character / math.log(2.0)
