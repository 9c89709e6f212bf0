"""Masked self-attention Transformers with the interface of the recurrent stacks.

    model = Transformer(in_features=88, width=64, num_layers=2, num_heads=4, rngs=nnx.Rngs(0))
    ys, cache = model(xs, lengths=lengths)        # xs [B, T, 88] -> ys [B, T, 64]

Pre-LayerNorm blocks (x + attention(LN(x)), then x + MLP(LN(x))), multi-head attention through
`jax.nn.dot_product_attention` (cuDNN flash attention on a GPU), learned, sinusoidal or rotary
positions. `causal=True` is a decoder for next-step prediction: step t sees steps <= t.
`causal=False` is an encoder (many-to-one, tagging): every valid step sees every valid step.
Padding (steps t >= lengths[b]) is never attended to, and its outputs are zeros.

The carry of a decoder is its key/value cache:
    {"layers": ({"keys", "values": [B, S, N, H]} per layer), "valid": [B, S] bool,
     "position": [B] int32 (steps read so far)}.
Called with `initial_carry`, a chunk xs [B, T, D] attends to the S cached steps and to itself
(causally); the returned cache keeps the last S of those S + T slots, so a cache from
`decode_state(batch, max_length)` makes step-by-step decoding equal the full forward pass, and a
chunk's returned cache (S = T) carries a memory of the last T steps into the next chunk.
Axis letters: B batch, T time, S cached steps, N heads, H head width (width / N), W width.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.layers import sequence

POSITIONS = ("learned", "sinusoidal", "rotary", "none")
ROTARY_BASE = 10000.0


def sinusoidal_positions(positions, width: int):
  """positions [...] int -> [..., width]: sin of the first ceil(width/2) frequencies, then cos."""
  half = -(-width // 2)
  frequencies = ROTARY_BASE ** (-jnp.arange(half) / half)
  angles = positions[..., None].astype(jnp.float32) * frequencies
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[..., :width]


def rotate(x, positions):
  """Rotary position embedding: x [B, T, N, H] (H even), positions [B, T] -> [B, T, N, H]; the
  pair (x[..., i], x[..., i + H/2]) turns by the angle position * base^(-2i/H)."""
  half = x.shape[-1] // 2
  frequencies = ROTARY_BASE ** (-jnp.arange(half) * 2.0 / x.shape[-1])
  angles = (positions[..., None].astype(jnp.float32) * frequencies)[:, :, None, :]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class Attention(nnx.Module):
  """Multi-head self-attention; the query, key and value projections are one matmul."""

  def __init__(self, width: int, num_heads: int, *, rotary: bool, rngs: nnx.Rngs):
    self.num_heads, self.rotary = num_heads, rotary
    self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
    self.out = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, x, positions, *, causal: bool, lengths, cache=None, mask=None):
    """x [B, T, W], positions [B, T] -> (y [B, T, W], {"keys", "values"} attended over).

    Without `cache`: attends within x (causally if `causal`, up to `lengths`). With `cache`
    ({"keys", "values": [B, S, N, H]}): attends to the cache and x under `mask` [B, 1, T, S+T].
    """
    batch, steps, width = x.shape
    q, k, v = jnp.split(self.qkv(x).reshape(batch, steps, 3 * self.num_heads, -1), 3, axis=2)
    if self.rotary:
      q, k = rotate(q, positions), rotate(k, positions)
    if cache is None:
      # Causal: a valid query (t < length) sees only keys s <= t, all valid, so only the
      # encoder masks keys by length (a padded query's output is zeroed by the caller).
      kv_lengths = None if lengths is None or causal else lengths.astype(jnp.int32)
      y = jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                       key_value_seq_lengths=kv_lengths)
      return self.out(y.reshape(batch, steps, width)), {"keys": k, "values": v}
    keys = jnp.concatenate([cache["keys"], k.astype(cache["keys"].dtype)], axis=1)
    values = jnp.concatenate([cache["values"], v.astype(cache["values"].dtype)], axis=1)
    y = jax.nn.dot_product_attention(q, keys.astype(q.dtype), values.astype(q.dtype), mask=mask)
    return self.out(y.reshape(batch, steps, width)), {"keys": keys, "values": values}


class Block(nnx.Module):
  """x + dropout(attention(LN(x))), then x + dropout(MLP(LN(x))) with a GELU MLP."""

  def __init__(self, width: int, num_heads: int, mlp_width: int, *, rotary: bool,
               dropout: nnx.Dropout | None, rngs: nnx.Rngs):
    self.attention_norm = nnx.LayerNorm(width, rngs=rngs)
    self.attention = Attention(width, num_heads, rotary=rotary, rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(width, rngs=rngs)
    self.mlp_in = nnx.Linear(width, mlp_width, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_width, width, rngs=rngs)
    self.dropout = dropout

  def _drop(self, x):
    return x if self.dropout is None else self.dropout(x)

  def __call__(self, x, positions, **attention_options):
    y, kv = self.attention(self.attention_norm(x), positions, **attention_options)
    x = x + self._drop(y)
    x = x + self._drop(self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x)))))
    return x, kv


class Transformer(nnx.Module):
  """A stack of pre-LN self-attention blocks over a linear projection of the inputs.

  Args:
    in_features: D of the inputs.
    width: W, the model width (the output size); a multiple of num_heads.
    num_layers: blocks.
    num_heads: attention heads N; head width H = width / num_heads (even for rotary positions).
    mlp_ratio: the MLP's hidden width is mlp_ratio * width.
    dropout: rate on the embedded inputs and on each residual branch, in [0, 1).
    positions: "learned" (a table of max_positions), "sinusoidal" (added to the embedded
      inputs), "rotary" (queries and keys turned by position) or "none".
    max_positions: positions the learned table holds (a call without a cache longer than this
      is refused; through a cache, later positions read NaN: size the table for decoding).
    causal: a decoder (step t attends to steps <= t) or, False, an encoder over whole sequences.
  """

  def __init__(self, in_features: int, width: int, *, num_layers: int = 2, num_heads: int = 4,
               mlp_ratio: int = 4, dropout: float = 0.0, positions: str = "sinusoidal",
               max_positions: int = 4096, causal: bool = True, rngs: nnx.Rngs):
    for name, value in (("in_features", in_features), ("width", width),
                        ("num_layers", num_layers), ("num_heads", num_heads),
                        ("mlp_ratio", mlp_ratio), ("max_positions", max_positions)):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if width % num_heads:
      raise ValueError(f"width must be a multiple of num_heads={num_heads}, got {width}")
    if positions not in POSITIONS:
      raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if positions == "rotary" and (width // num_heads) % 2:
      raise ValueError(f"rotary positions need an even head width, got width {width} / "
                       f"num_heads {num_heads} = {width // num_heads}")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    self.in_features, self.width, self.num_heads = in_features, width, num_heads
    self.positions, self.max_positions, self.causal = positions, max_positions, causal
    self.embed = nnx.Linear(in_features, width, rngs=rngs)
    self.position_table = (nnx.Embed(max_positions, width, rngs=rngs)
                           if positions == "learned" else None)
    # Only models with dropout carry its random state (as the recurrent stacks).
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
    self.blocks = nnx.List([
        Block(width, num_heads, mlp_ratio * width, rotary=positions == "rotary",
              dropout=self.dropout, rngs=rngs) for _ in range(num_layers)])
    self.final_norm = nnx.LayerNorm(width, rngs=rngs)

  @property
  def output_size(self) -> int:
    return self.width

  def decode_state(self, batch_size: int, max_length: int, dtype=jnp.float32):
    """The empty cache for decoding up to `max_length` steps, one at a time or in chunks."""
    if not self.causal:
      raise ValueError("decode_state needs a causal Transformer (an encoder reads whole inputs)")
    shape = (batch_size, max_length, self.num_heads, self.width // self.num_heads)
    layer = lambda: {"keys": jnp.zeros(shape, dtype), "values": jnp.zeros(shape, dtype)}
    return {"layers": tuple(layer() for _ in self.blocks),
            "valid": jnp.zeros((batch_size, max_length), bool),
            "position": jnp.zeros((batch_size,), jnp.int32)}

  def _embed(self, xs, positions):
    x = self.embed(xs)
    if self.positions == "learned":
      x = x + self.position_table(positions)
    elif self.positions == "sinusoidal":
      x = x + sinusoidal_positions(positions, self.width).astype(x.dtype)
    return x if self.dropout is None else self.dropout(x)

  def _check_carry(self, carry, batch: int):
    if not self.causal:
      raise ValueError("initial_carry needs a causal Transformer (an encoder has no cache)")
    if not isinstance(carry, dict) or set(carry) != {"layers", "valid", "position"}:
      raise ValueError("initial_carry must be a cache from decode_state or a previous call, "
                       "a dict with keys 'layers', 'valid', 'position'")
    expected = (batch, carry["valid"].shape[1], self.num_heads, self.width // self.num_heads)
    if len(carry["layers"]) != len(self.blocks) or any(
        tuple(c[n].shape) != expected for c in carry["layers"] for n in ("keys", "values")):
      raise ValueError(f"initial_carry must hold {len(self.blocks)} layers of keys and values "
                       f"of shape [batch, cached steps, heads, head width]={expected}")

  def __call__(self, xs, *, lengths=None, initial_carry=None):
    """xs [B, T, D] -> (ys [B, T, W], cache: see the module docstring; None for an encoder)."""
    sequence.check_inputs(xs, self.in_features, time_major=False)
    batch, steps = xs.shape[:2]
    lengths = sequence.check_lengths(lengths, batch, steps)
    valid = (jnp.ones((batch, steps), bool) if lengths is None
             else jnp.arange(steps)[None, :] < lengths[:, None])
    if initial_carry is None:
      if self.positions == "learned" and steps > self.max_positions:
        raise ValueError(f"xs has {steps} steps, more than max_positions={self.max_positions}")
      positions = jnp.broadcast_to(jnp.arange(steps), (batch, steps))
      options = dict(causal=self.causal, lengths=lengths)
      caches = [None] * len(self.blocks)
    else:
      self._check_carry(initial_carry, batch)
      positions = initial_carry["position"][:, None] + jnp.arange(steps)
      cached = initial_carry["valid"].shape[1]
      valid = jnp.concatenate([initial_carry["valid"], valid], axis=1)
      # Query t (slot cached + t) sees every valid earlier slot and itself.
      causal = jnp.arange(cached + steps)[None, :] <= cached + jnp.arange(steps)[:, None]
      options = dict(causal=True, lengths=lengths, mask=(valid[:, None, :] & causal)[:, None])
      caches = initial_carry["layers"]
    x = self._embed(xs, positions)
    layers = []
    for block, cache in zip(self.blocks, caches):
      x, kv = block(x, positions, cache=cache, **options)
      layers.append(kv)
    ys = self.final_norm(x)
    if lengths is not None:
      ys = jnp.where((jnp.arange(steps)[None, :] < lengths[:, None])[..., None], ys, 0)
    if not self.causal:
      return ys, None
    keep = steps if initial_carry is None else initial_carry["valid"].shape[1]
    advanced = steps if lengths is None else lengths
    carry = {"layers": tuple({n: kv[n][:, -keep:] for n in kv} for kv in layers),
             "valid": valid[:, -keep:], "position": positions[:, 0] + advanced}
    return ys, carry


def width_step(num_heads: int, positions: str) -> int:
  """The granularity of valid widths: whole heads, of even width for rotary positions."""
  return num_heads * (2 if positions == "rotary" else 1)


# The model config keys of "transformer" besides the common ones, with their defaults.
CONFIG_KEYS = dict(num_heads=4, mlp_ratio=4, positions="sinusoidal", max_positions=4096,
                   causal=True)


def transformer_backbone(config, in_features: int, rngs: nnx.Rngs) -> Transformer:
  """The `model.backbone = "transformer"` builder: width = hidden_size, num_layers, dropout and
  CONFIG_KEYS."""
  return Transformer(in_features, config.hidden_size, num_layers=config.num_layers,
                     num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
                     dropout=config.dropout, positions=config.positions,
                     max_positions=config.max_positions, causal=config.causal, rngs=rngs)

