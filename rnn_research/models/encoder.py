"""Reading a whole sequence: embedding, a backbone (optionally bidirectional) and a summary vector.

The many-to-one, tagging and seq2seq heads all start here:

    encoder = SequenceEncoder(model_config, vocab_size, embed=True, rngs=rngs)
    ys, summary = encoder(ids, lengths)       # ids [B, T] -> ys [B, T, E], summary [B, E]

Model config keys read here: backbone, hidden_size, ... (see `rnn_research.backbones`), and
  bidirectional: a second backbone reads each sequence reversed; outputs concatenated,
  pooling: the summary is the output at each sequence's last valid step (and, when
    bidirectional, the backward backbone's output at step 0, which has read the whole
    sequence), "mean" or "max" over the valid steps,
  embed_size: width of the token embedding (None: hidden_size),
with the defaults of CONFIG_KEYS.
"""
import jax.numpy as jnp
from flax import nnx

from rnn_research.backbones import complete, make_backbone
from rnn_research.layers import reverse_sequences

# The model config keys an encoder reads besides its backbone's, with their defaults
# (embed_size None: the hidden size).
CONFIG_KEYS = dict(bidirectional=False, pooling="last", embed_size=None)

POOLINGS = ("last", "mean", "max")


def check_ids_and_lengths(inputs, lengths, *, embed: bool, in_features: int) -> None:
  """Token ids [B, T] int (embed) or features [B, T, in_features] float, and lengths [B]."""
  if embed and (inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.integer)):
    raise ValueError(f"inputs must be integer token ids [batch, time], got {inputs.dtype} of "
                     f"shape {tuple(inputs.shape)}")
  if not embed and (inputs.ndim != 3 or inputs.shape[-1] != in_features):
    raise ValueError(f"inputs must be [batch, time, {in_features}] features, got shape "
                     f"{tuple(inputs.shape)}")
  if lengths is not None and tuple(lengths.shape) != inputs.shape[:1]:
    raise ValueError(f"lengths must be [batch]=({inputs.shape[0]},), got shape "
                     f"{tuple(lengths.shape)}")


class Bidirectional(nnx.Module):
  """Two backbones: one reads each sequence forward, the other its valid span reversed (padding
  stays at the end); outputs concatenated [..., forward, backward], aligned with the inputs.

  Works with any backbone; for a recurrent stack of several layers it joins two stacks at the
  top (each layer of a stack reads only its own direction).
  """

  def __init__(self, config, in_features: int, rngs: nnx.Rngs):
    self.forward = make_backbone(config, in_features, rngs)
    self.backward = make_backbone(config, in_features, rngs)
    self.split = self.forward.output_size

  @property
  def output_size(self) -> int:
    return self.split + self.backward.output_size

  def __call__(self, xs, *, lengths=None, initial_carry=None):
    """xs [B, T, D] -> (ys [B, T, output_size], (forward carry, backward carry))."""
    carry_f, carry_b = (None, None) if initial_carry is None else initial_carry
    ys_f, final_f = self.forward(xs, lengths=lengths, initial_carry=carry_f)
    flip = lambda a: jnp.swapaxes(reverse_sequences(jnp.swapaxes(a, 0, 1), lengths), 0, 1)
    ys_b, final_b = self.backward(flip(xs), lengths=lengths, initial_carry=carry_b)
    return jnp.concatenate([ys_f, flip(ys_b)], axis=-1), (final_f, final_b)


def make_encoder(config, in_features: int, rngs: nnx.Rngs):
  """The backbone of `config`, wrapped in `Bidirectional` when config.bidirectional."""
  if complete(config, CONFIG_KEYS).bidirectional:
    return Bidirectional(config, in_features, rngs)
  return make_backbone(config, in_features, rngs)


def pool(ys, lengths, pooling: str = "last", split: int | None = None):
  """The summary [B, E] of outputs ys [B, T, E] with `lengths` [B] (None: all T valid).

  "last": ys at step lengths - 1; with `split` (bidirectional), only ys[..., :split] is taken
  there and ys[..., split:] (the backward direction) at step 0. "mean"/"max": over valid steps.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
  batch, steps = ys.shape[:2]
  if lengths is None:
    lengths = jnp.full((batch,), steps, jnp.int32)
  if pooling == "last":
    last = jnp.take_along_axis(ys, (lengths - 1)[:, None, None], axis=1)[:, 0]
    return last if split is None else jnp.concatenate([last[:, :split], ys[:, 0, split:]], -1)
  valid = (jnp.arange(steps)[None, :] < lengths[:, None])[..., None]
  if pooling == "mean":
    return jnp.sum(jnp.where(valid, ys, 0), axis=1) / lengths[:, None].astype(ys.dtype)
  return jnp.max(jnp.where(valid, ys, -jnp.inf), axis=1)


class SequenceEncoder(nnx.Module):
  """(Embedding +) backbone + pooling.

  Args:
    config: model config (see module docstring).
    in_features: D of float inputs, or the vocabulary size for token ids (`embed=True`).
    embed: inputs are token ids, embedded to config.embed_size first.
  """

  def __init__(self, config, in_features: int, *, embed: bool = False, rngs: nnx.Rngs):
    config = complete(config, CONFIG_KEYS)
    self.pooling = config.pooling
    if self.pooling not in POOLINGS:
      raise ValueError(f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")
    self.in_features = in_features
    width = config.embed_size or config.hidden_size
    self.embed = nnx.Embed(in_features, width, rngs=rngs) if embed else None
    self.backbone = make_encoder(config, width if embed else in_features, rngs)

  @property
  def output_size(self) -> int:
    return self.backbone.output_size

  def __call__(self, inputs, lengths=None):
    """inputs [B, T] ids or [B, T, D] -> (ys [B, T, output_size], summary [B, output_size])."""
    inputs = jnp.asarray(inputs)
    lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    check_ids_and_lengths(inputs, lengths, embed=self.embed is not None,
                          in_features=self.in_features)
    xs = self.embed(inputs) if self.embed is not None else inputs
    ys, _ = self.backbone(xs, lengths=lengths)
    split = self.backbone.split if isinstance(self.backbone, Bidirectional) else None
    return ys, pool(ys, lengths, self.pooling, split)

