"""Drawing tokens from a model's logits: greedy, temperature and top-k sampling, and the loop
that feeds each drawn token back into a step function (autoregressive generation).

Shapes: logits [B, V] over a vocabulary of V tokens; ids [B] int32.
"""
from typing import Callable

import jax
import jax.numpy as jnp


def check_sampling(temperature: float, top_k: int, vocab_size: int | None = None) -> None:
  """Raises ValueError unless temperature >= 0 and 0 <= top_k (<= vocab_size)."""
  if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
    raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
  if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
    raise ValueError(f"top_k must be an int >= 0 (0 = the whole vocabulary), got {top_k!r}")
  if vocab_size is not None and top_k > vocab_size:
    raise ValueError(f"top_k must be <= the vocabulary size {vocab_size}, got {top_k}")


def sample_token(key, logits, *, temperature: float = 1.0, top_k: int = 0):
  """One token per row of `logits` [B, V] -> ids [B] int32.

  temperature == 0 takes the argmax (greedy); otherwise a token is drawn from
  softmax(logits / temperature) restricted to the row's `top_k` largest logits (all when 0).
  Ties at the k-th largest logit are all kept.
  """
  if logits.ndim != 2:
    raise ValueError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
  check_sampling(temperature, top_k, logits.shape[-1])
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def sample_loop(step: Callable, carry, first_ids, key, num_steps: int, *,
                temperature: float = 1.0, top_k: int = 0, end_id: int | None = None,
                pad_id: int = 0):
  """Autoregressive generation: feeds each drawn token back into `step`.

  Args:
    step: pure function (carry, ids [B]) -> (carry, logits [B, V]): reads the last token.
    carry: the state before `first_ids` is read (any pytree).
    first_ids: [B] int, the first token fed in (e.g. `<start>`).
    key: PRNG key; step t draws with fold_in(key, t).
    num_steps: tokens to draw.
    temperature, top_k: see `sample_token`.
    end_id: once a row draws it, the row's later tokens are `pad_id`.

  Returns:
    (ids [B, num_steps] int32, lengths [B] int32: tokens up to and including `<end>`).
  """
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  first_ids = jnp.asarray(first_ids, jnp.int32)
  if first_ids.ndim != 1:
    raise ValueError(f"first_ids must be [batch], got shape {tuple(first_ids.shape)}")
  check_sampling(temperature, top_k)

  def body(state, t):
    carry, ids, done = state
    carry, logits = step(carry, ids)
    new = sample_token(jax.random.fold_in(key, t), logits, temperature=temperature, top_k=top_k)
    new = jnp.where(done, pad_id, new)
    if end_id is not None:
      done = done | (new == end_id)
    return (carry, new, done), (new, done)

  done = jnp.zeros(first_ids.shape, bool)
  _, (ids, finished) = jax.lax.scan(body, (carry, first_ids, done), jnp.arange(num_steps))
  # A row's length: the steps before it was done, plus the step that drew `<end>`.
  lengths = jnp.minimum(jnp.sum(~finished, axis=0) + 1, num_steps)
  return ids.T, lengths.astype(jnp.int32)
