"""Truncated backpropagation through time with k1 ≠ k2 (Williams & Peng 1990; Sutskever 2013):
every k1 steps the parameters get a gradient that flows back k2 ≥ k1 steps.

Realised with windows: the update for chunk j (steps [j·k1, (j+1)·k1), the last one possibly
shorter) runs the model over the window of the k2 steps that end with the chunk (fewer at the
sequence's start) from the carry at the window's start,
held fixed (stop_gradient). The loss reads only the chunk's k1 outputs, so every step's loss
counts once over the sequence, and its gradient reaches k2 steps back (fewer near the start).
The first k2 − k1 steps of a window only carry the gradient path: they repeat the steps of the
previous windows. The next window starts inside this one, so the carry that moves on is the
carry at that point of this window's run. k1 = k2 is plain chunked BPTT.

    carry = initial carry
    for chunk in chunks(num_steps, k1, k2):
      (loss, carry), grads = chunk_value_and_grad(apply, loss_fn, params, carry, xs, targets,
                                                  chunk)
      params = update(params, grads)

apply(params, xs, carry) -> (ys, final carry) runs the model over xs [B, t, ...] from `carry`
(a pure function: `layers.run`, or an NNX model through nnx.split / nnx.merge);
loss_fn(ys, targets) -> scalar, over a chunk's outputs and targets [B, k1, ...].
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Chunk(NamedTuple):
  """Steps [start, stop) run from the carry at `start`; the loss reads [begin, stop); the next
  chunk's window starts at `split`."""
  start: int
  split: int
  begin: int
  stop: int


def chunks(num_steps: int, k1: int, k2: int) -> list[Chunk]:
  """The windows of TBPTT(k1, k2) over `num_steps` steps (the last chunk may be shorter)."""
  for name, value in (("k1", k1), ("k2", k2), ("num_steps", num_steps)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if k2 < k1:
    raise ValueError(f"k2 (steps the gradient flows back) must be >= k1 (steps between "
                     f"updates), got k1={k1}, k2={k2}")
  begins = list(range(0, num_steps, k1))
  stops = [min(begin + k1, num_steps) for begin in begins]
  starts = [max(0, stop - k2) for stop in stops]
  splits = starts[1:] + stops[-1:]  # where the next window starts
  return [Chunk(*chunk) for chunk in zip(starts, splits, begins, stops)]


def chunk_loss(apply: Callable, loss_fn: Callable, params, carry, xs, targets, chunk: Chunk):
  """-> (loss over the chunk's outputs, the carry at `chunk.split` for the next window).

  carry: the carry at chunk.start (its gradient is stopped); xs, targets: the whole sequence's
  [B, T, ...] (targets only read at [begin, stop))."""
  carry = jax.lax.stop_gradient(carry)
  start, split, begin, stop = chunk
  ys, next_carry = [], carry
  for a, b in ((start, split), (split, stop)):
    if b > a:
      ys_part, carry = apply(params, xs[:, a:b], carry)
      ys.append(ys_part)
    if b == split:
      next_carry = carry
  ys = jnp.concatenate(ys, axis=1)
  return loss_fn(ys[:, begin - start:], targets[:, begin:stop]), next_carry


def chunk_value_and_grad(apply: Callable, loss_fn: Callable, params, carry, xs, targets,
                         chunk: Chunk):
  """-> ((loss, next carry), d loss / d params) for one chunk (see `chunk_loss`)."""
  return jax.value_and_grad(
      lambda p: chunk_loss(apply, loss_fn, p, carry, xs, targets, chunk), has_aux=True)(params)
