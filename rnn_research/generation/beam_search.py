"""Beam search over any autoregressive step function.

At every step each of the K beams of a row is extended by every token; the K best of the K·V
candidates (by summed log-probability) survive. A beam that has emitted `<end>` only extends
with padding at no cost, so it keeps its score and its slot. With K = 1 this is greedy decoding.
"""
from typing import Callable

import jax
import jax.numpy as jnp


def check_search(beam_size: int, max_length: int) -> None:
  if not isinstance(beam_size, int) or beam_size < 1:
    raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
  if not isinstance(max_length, int) or max_length < 1:
    raise ValueError(f"max_length must be a positive int, got {max_length!r}")


def _tile(tree, beam_size: int):
  """Leaves [B, ...] -> [B·K, ...], each row repeated K times (row b's beams: b·K .. b·K+K-1)."""
  return jax.tree.map(lambda leaf: jnp.repeat(leaf, beam_size, axis=0), tree)


def _gather_beams(tree, parent):
  """Leaves [B·K, ...] -> the rows of the surviving beams' parents, parent [B, K] in [0, K)."""
  batch, beams = parent.shape

  def gather(leaf):
    rest = leaf.shape[1:]
    index = parent.reshape((batch, beams) + (1,) * len(rest))
    picked = jnp.take_along_axis(leaf.reshape((batch, beams) + rest), index, axis=1)
    return picked.reshape((batch * beams,) + rest)

  return jax.tree.map(gather, tree)


def beam_search(step: Callable, state, first_ids, *, beam_size: int, max_length: int,
                end_id: int, pad_id: int = 0, length_penalty: float = 0.0, constants=None):
  """The best sequence of each row found by a beam search.

  Args:
    step: pure function (state, ids [N], constants) -> (state, logits [N, V]), N = B·K.
    state: pytree of [B, ...] arrays, the state before `first_ids` is read.
    first_ids: [B] int, the first token fed in (e.g. `<start>`).
    beam_size: K >= 1.
    max_length: L, tokens to produce.
    end_id, pad_id: a beam is finished once it emits `end_id`; it is then padded.
    length_penalty: alpha; the final choice ranks beams by score / length**alpha (0 = sum).
    constants: pytree of [B, ...] arrays the step reads but never changes (e.g. the encoder's
      memory); tiled to the beams once.

  Returns:
    (ids [B, L] int32, lengths [B] int32 (up to and including `<end>`), scores [B]: the summed
    log-probabilities of the chosen sequences).
  """
  check_search(beam_size, max_length)
  first_ids = jnp.asarray(first_ids, jnp.int32)
  if first_ids.ndim != 1:
    raise ValueError(f"first_ids must be [batch], got shape {tuple(first_ids.shape)}")
  batch, beams = first_ids.shape[0], beam_size
  state, constants = _tile(state, beams), _tile(constants, beams)
  # Only beam 0 is live at first, so the K beams do not start as K copies of one sequence.
  scores = jnp.where(jnp.arange(beams) == 0, 0.0, -jnp.inf) * jnp.ones((batch, 1))
  finished = jnp.zeros((batch, beams), bool)
  tokens = jnp.full((batch, beams, max_length), pad_id, jnp.int32)

  def body(loop, t):
    state, ids, scores, finished, tokens = loop
    state, logits = step(state, ids, constants)
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, beams, vocab)
    pad_only = jnp.where(jnp.arange(vocab) == pad_id, 0.0, -jnp.inf)
    logp = jnp.where(finished[..., None], pad_only, logp)
    scores, index = jax.lax.top_k((scores[..., None] + logp).reshape(batch, beams * vocab), beams)
    parent, token = index // vocab, (index % vocab).astype(jnp.int32)
    state = _gather_beams(state, parent)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(token)
    finished = jnp.take_along_axis(finished, parent, axis=1) | (token == end_id)
    return (state, token.reshape(-1), scores, finished, tokens), None

  loop = (state, jnp.repeat(first_ids, beams), scores, finished, tokens)
  (_, _, scores, _, tokens), _ = jax.lax.scan(body, loop, jnp.arange(max_length))
  is_end = tokens == end_id
  lengths = jnp.where(is_end.any(-1), jnp.argmax(is_end, -1) + 1, max_length)
  ranking = scores / lengths.astype(jnp.float32) ** length_penalty
  best = jnp.argmax(ranking, axis=-1)
  pick = lambda a: jnp.take_along_axis(a, best.reshape((batch, 1) + (1,) * (a.ndim - 2)), 1)[:, 0]
  return pick(tokens), pick(lengths).astype(jnp.int32), pick(scores)
