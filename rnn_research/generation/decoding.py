"""Incremental decoding for any causal backbone, and generation from a `NextStepModel`.

Every backbone's carry is the state after the steps it has read, so one protocol decodes all:
    state = decode_state(backbone, batch_size, max_length)    # before the first step
    y_t, state = decode_step(backbone, x_t, state)            # x_t [B, D] -> y_t [B, out]
The recurrent stacks carry their cells' states (O(1) per step), the Transformer its key/value
cache (a step attends to every cached step), the TCN the last (k - 1) * dilation inputs of each
convolution and the sliding-window MLP its window; the steps equal the full forward pass.

`sample_piano_rolls` and `sample_tokens` generate from a next-step model: the first input is a
zero frame (piano rolls) or `<start>` (characters), and each drawn step is fed back in.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.generation import sampling


def _in_features(backbone) -> int:
  if hasattr(backbone, "in_features"):
    return backbone.in_features
  return backbone.layers[0][0].definition.in_features  # the recurrent stacks' first cell


def decode_state(backbone, batch_size: int, max_length: int, dtype=jnp.float32):
  """The state before the first step, for decoding up to `max_length` steps (the Transformer's
  cache holds that many; the other backbones' state does not grow)."""
  if getattr(backbone, "bidirectional", False):
    raise ValueError("a bidirectional backbone reads whole sequences and cannot decode step by "
                     "step")
  for name, value in (("batch_size", batch_size), ("max_length", max_length)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if hasattr(backbone, "decode_state"):
    return backbone.decode_state(batch_size, max_length, dtype)
  xs = jnp.zeros((batch_size, 1, _in_features(backbone)), dtype)
  shapes = nnx.eval_shape(lambda b: b(xs)[1], backbone)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def decode_step(backbone, x_t, state):
  """One step: x_t [B, D] -> (y_t [B, output_size], the state after it)."""
  if x_t.ndim != 2:
    raise ValueError(f"x_t must be [batch, features], got shape {tuple(x_t.shape)}")
  ys, state = backbone(x_t[:, None], initial_carry=state)
  return ys[:, 0], state


def _read(model, xs, state):
  """A next-step model's logits [B, T, K] for inputs xs [B, T(, D)] after `state`."""
  xs = model.embed(xs) if model.embed is not None else xs
  ys, state = model.backbone(xs, initial_carry=state)
  return model.head(ys), state


def _eval_copy(model):
  """A copy of `model` in eval mode (dropout off), as (graphdef, state) for a jitted function."""
  copy = nnx.merge(*nnx.split(model))
  copy.eval()
  return nnx.split(copy)


def _prime(model, state, first, primer):
  """Reads `first` ([B] or [B, D]) then all but the last primer step; returns (state, the
  input of the first drawn step)."""
  if primer is None:
    return state, first
  inputs = jnp.concatenate([first[:, None], primer[:, :-1].astype(first.dtype)], axis=1)
  _, state = _read(model, inputs, state)
  return state, primer[:, -1].astype(first.dtype)


def _check_primer(primer, batch_size: int, trailing: tuple, what: str):
  if primer is None:
    return None
  primer = jnp.asarray(primer)
  if primer.ndim != 2 + len(trailing) or primer.shape[0] != batch_size or \
      tuple(primer.shape[2:]) != trailing or primer.shape[1] < 1:
    raise ValueError(f"primer must be {what}, got shape {tuple(primer.shape)}")
  return primer


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _roll_loop(graphdef, params, key, num_steps, temperature, primer):
  model = nnx.merge(graphdef, params)
  batch, keys = primer.shape[0], model.head.out_features
  state = decode_state(model.backbone, batch, num_steps + primer.shape[1], primer.dtype)
  state, frame = _prime(model, state, jnp.zeros((batch, keys), primer.dtype),
                        primer if primer.shape[1] else None)

  def body(carry, t):
    state, frame = carry
    logits, state = _read(model, frame[:, None], state)
    logits = logits[:, 0]
    if temperature == 0:
      drawn = logits > 0
    else:
      u = jax.random.uniform(jax.random.fold_in(key, t), logits.shape)
      drawn = u < jax.nn.sigmoid(logits / temperature)
    frame = drawn.astype(frame.dtype)
    return (state, frame), drawn

  _, frames = jax.lax.scan(body, (state, frame), jnp.arange(num_steps))
  return jnp.swapaxes(frames, 0, 1).astype(jnp.uint8)


def sample_piano_rolls(model, key, batch_size: int, num_steps: int, *, temperature: float = 1.0,
                       primer=None):
  """Piano rolls from a next-step model of 88 sigmoid units -> uint8 [B, num_steps, 88].

  Each key of a step is drawn independently, on with probability sigmoid(logit / temperature)
  (temperature 0: on where the logit is > 0). `primer` [B, P, 88] is read first; the samples
  continue it.
  """
  if model.embed is not None:
    raise ValueError("sample_piano_rolls needs a model of float frames; use sample_tokens")
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0 (0 = most likely keys), got {temperature!r}")
  units = model.head.out_features
  primer = _check_primer(primer, batch_size, (units,), f"[batch={batch_size}, steps, {units}]")
  primer = jnp.zeros((batch_size, 0, units)) if primer is None else primer
  graphdef, params = _eval_copy(model)
  return _roll_loop(graphdef, params, key, num_steps, float(temperature),
                    primer.astype(jnp.float32))


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6, 7))
def _token_loop(graphdef, params, key, num_steps, start_id, end_id, temperature, top_k, primer):
  model = nnx.merge(graphdef, params)
  batch = primer.shape[0]
  state = decode_state(model.backbone, batch, num_steps + primer.shape[1] + 1)
  state, first = _prime(model, state, jnp.full((batch,), start_id, jnp.int32),
                        primer if primer.shape[1] else None)

  def step(state, ids):
    logits, state = _read(model, ids[:, None], state)
    return state, logits[:, 0]

  return sampling.sample_loop(step, state, first, key, num_steps, temperature=temperature,
                              top_k=top_k, end_id=end_id)


def sample_tokens(model, key, batch_size: int, num_steps: int, *, start_id: int,
                  end_id: int | None = None, temperature: float = 1.0, top_k: int = 0,
                  primer=None):
  """Token ids from a next-step model of embedded ids and a softmax output.

  Starts from `start_id` (and the ids of `primer` [B, P] after it), draws with
  `sampling.sample_token` (temperature, top-k); rows that draw `end_id` pad the rest.
  Returns (ids [B, num_steps] int32, lengths [B] int32, see `sampling.sample_loop`).
  """
  if model.embed is None:
    raise ValueError("sample_tokens needs a model of token ids; use sample_piano_rolls")
  sampling.check_sampling(temperature, top_k, model.head.out_features)
  primer = _check_primer(primer, batch_size, (), f"[batch={batch_size}, steps] ids")
  primer = jnp.zeros((batch_size, 0), jnp.int32) if primer is None else primer.astype(jnp.int32)
  graphdef, params = _eval_copy(model)
  return _token_loop(graphdef, params, key, num_steps, int(start_id),
                     None if end_id is None else int(end_id), float(temperature), int(top_k),
                     primer)
