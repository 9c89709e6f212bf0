"""Many-to-many with different lengths: an encoder–decoder with attention.

    model = Seq2Seq(model_config, source_vocab, target_vocab, rngs=rngs)
    logits = model(src, src_lengths, decoder_inputs)          # teacher forcing: [B, T, V]
    ids, lengths = model.greedy(src, src_lengths, start_id=1, end_id=2, max_length=20)
    ids, lengths, scores = model.beam_search(src, src_lengths, beam_size=4, ...)

The encoder is any backbone (`models.encoder`, optionally bidirectional) over embedded source
tokens; its outputs are the memory the decoder attends to, and its summary (`pooling`) sets the
decoder's first state through a `bridge` (tanh of a linear map). The decoder is an LSTM or GRU
cell run one step per target token. Attention (model config `attention`):
- "bahdanau" (Bahdanau et al. 2015, additive): the previous decoder state s(t-1) scores memory
  m_j as v·tanh(W_s s + W_m m_j); the context c_t joins the input, x_t = [embed(y(t-1)); c_t].
- "luong" (Luong et al. 2015, multiplicative): the new state s_t scores m_j as s_t·(W m_j), a
  dot product with the memory projected to the decoder's width; with input feeding,
  x_t = [embed(y(t-1)); a(t-1)].
- "none": no context; the decoder reads only the bridge's state and its own outputs.
With attention the output a_t = tanh(W_c [s_t; c_t]), else a_t = s_t; logits = W_o a_t.
Padding in the source (past `lengths`) gets attention weight 0.

Model config keys: CONFIG_KEYS, those of `models.encoder` and the decoder's attention,
decoder_cell ("lstm" or "gru"), attention_size (None: hidden_size; Bahdanau only) and variant
(the decoder LSTM's preset).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.backbones import complete
from rnn_research.cells import modules as cells
from rnn_research.generation import beam_search as beams
from rnn_research.generation.sampling import sample_loop
from rnn_research.models import encoder
from rnn_research.models.encoder import SequenceEncoder

ATTENTIONS = ("bahdanau", "luong", "none")
DECODER_CELLS = ("lstm", "gru")
# The model config keys of an encoder-decoder besides its backbone's, with their defaults.
CONFIG_KEYS = dict(encoder.CONFIG_KEYS, attention="bahdanau", decoder_cell="lstm",
                   attention_size=None, variant="V")


class Memory(NamedTuple):
  """What the decoder attends to: values [B, S, M] (encoder outputs), keys [B, S, A] (their
  projection, computed once), mask [B, S] (True at valid source steps)."""
  values: jax.Array
  keys: jax.Array
  mask: jax.Array


class BahdanauAttention(nnx.Module):
  """Additive scores v·tanh(W_q q + W_m m_j + b)."""

  def __init__(self, query_size: int, memory_size: int, attention_size: int, *, rngs: nnx.Rngs):
    self.query = nnx.Linear(query_size, attention_size, use_bias=False, rngs=rngs)
    self.memory = nnx.Linear(memory_size, attention_size, rngs=rngs)
    self.v = nnx.Linear(attention_size, 1, use_bias=False, rngs=rngs)

  def keys(self, values):
    """values [B, S, M] -> keys [B, S, A]."""
    return self.memory(values)

  def scores(self, query, keys):
    """query [B, Q], keys [B, S, A] -> [B, S]."""
    return self.v(jnp.tanh(keys + self.query(query)[:, None]))[..., 0]


class LuongAttention(nnx.Module):
  """Multiplicative scores q·(W m_j) (Luong's "general" score: the dot product of the query with
  the memory projected to the query's width)."""

  def __init__(self, query_size: int, memory_size: int, *, rngs: nnx.Rngs):
    self.memory = nnx.Linear(memory_size, query_size, use_bias=False, rngs=rngs)

  def keys(self, values):
    return self.memory(values)

  def scores(self, query, keys):
    return jnp.einsum("bq,bsq->bs", query, keys)


def attend(attention, query, memory: Memory):
  """(context [B, M], weights [B, S]): softmax of the scores over the valid source steps."""
  scores = attention.scores(query, memory.keys)
  scores = jnp.where(memory.mask, scores, jnp.finfo(scores.dtype).min)
  weights = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("bs,bsm->bm", weights, memory.values), weights


def _hidden(carry):
  """The output-side state s of a cell's carry (LSTM: h; GRU: the carry itself)."""
  return carry.h if hasattr(carry, "h") else carry


class Decoder(nnx.Module):
  """The target-side LSTM/GRU with attention over `Memory`; one `step` per token.

  A decoder state is (cell carry, a [B, hidden]): a is the last attentional output, fed back
  with Luong's input feeding.
  """

  def __init__(self, config, vocab_size: int, memory_size: int, *, rngs: nnx.Rngs):
    config = complete(config, CONFIG_KEYS)
    self.kind = config.attention
    if self.kind not in ATTENTIONS:
      raise ValueError(f"model.attention must be one of {ATTENTIONS}, got {self.kind!r}")
    cell = config.decoder_cell
    if cell not in DECODER_CELLS:
      raise ValueError(f"model.decoder_cell must be one of {DECODER_CELLS}, got {cell!r}")
    hidden, embed_size = config.hidden_size, config.embed_size or config.hidden_size
    self.embed = nnx.Embed(vocab_size, embed_size, rngs=rngs)
    extra = {"bahdanau": memory_size, "luong": hidden, "none": 0}[self.kind]
    self.cell = (cells.LSTMCell(embed_size + extra, hidden, variant=config.variant,
                                rngs=rngs) if cell == "lstm"
                 else cells.GRUCell(embed_size + extra, hidden, rngs=rngs))
    attention = None
    if self.kind == "bahdanau":
      attention = BahdanauAttention(hidden, memory_size, config.attention_size or hidden,
                                    rngs=rngs)
    elif self.kind == "luong":
      attention = LuongAttention(hidden, memory_size, rngs=rngs)
    self.attention = attention
    self.combine = (nnx.Linear(hidden + memory_size, hidden, rngs=rngs)
                    if self.attention is not None else None)
    self.bridge = nnx.Linear(memory_size, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, vocab_size, rngs=rngs)

  def memory(self, values, lengths) -> Memory:
    mask = jnp.arange(values.shape[1])[None, :] < lengths[:, None]
    keys = self.attention.keys(values) if self.attention is not None else values[..., :0]
    return Memory(values, keys, mask)

  def initial_state(self, summary):
    """The bridge: every [B, hidden] array of the carry (h, and c of an LSTM) = tanh(W summary)."""
    start = jnp.tanh(self.bridge(summary))
    zero = self.cell.initialize_carry(start.shape)
    carry = jax.tree.map(lambda z: start if z.shape == start.shape else z, zero)
    return carry, jnp.zeros_like(start)

  def step(self, state, ids, memory: Memory):
    """Reads token ids [B] -> (state, logits [B, V], attention weights [B, S])."""
    return self.step_embedded(state, self.embed(ids), memory)

  def step_embedded(self, state, e, memory: Memory):
    carry, feed = state
    weights = jnp.zeros(memory.mask.shape, e.dtype)
    if self.kind == "bahdanau":
      context, weights = attend(self.attention, _hidden(carry), memory)
      e = jnp.concatenate([e, context], -1)
    elif self.kind == "luong":
      e = jnp.concatenate([e, feed], -1)
    carry, s = self.cell(carry, e)
    if self.kind == "luong":
      context, weights = attend(self.attention, s, memory)
    out = s if self.attention is None else jnp.tanh(self.combine(jnp.concatenate([s, context], -1)))
    return (carry, out), self.out(out), weights


class Seq2Seq(nnx.Module):
  """Encoder (`SequenceEncoder` over source ids) + attentional `Decoder`.

  Args:
    config: model config (see module docstring).
    source_vocab, target_vocab: vocabulary sizes (they may be the same vocabulary).
  """

  def __init__(self, config, source_vocab: int, target_vocab: int, *, rngs: nnx.Rngs):
    self.encoder = SequenceEncoder(config, source_vocab, embed=True, rngs=rngs)
    self.decoder = Decoder(config, target_vocab, self.encoder.output_size, rngs=rngs)

  def encode(self, inputs, lengths):
    """Source ids [B, S], lengths [B] -> (the decoder's first state, Memory)."""
    inputs, lengths = jnp.asarray(inputs), jnp.asarray(lengths, jnp.int32)
    values, summary = self.encoder(inputs, lengths)
    return self.decoder.initial_state(summary), self.decoder.memory(values, lengths)

  def __call__(self, inputs, lengths, decoder_inputs, *, return_attention: bool = False):
    """Teacher forcing: decoder_inputs [B, T] (`<start>` then the target's first T-1 tokens)
    -> logits [B, T, V] (and the attention weights [B, T, S])."""
    decoder_inputs = jnp.asarray(decoder_inputs)
    if (decoder_inputs.ndim != 2 or decoder_inputs.shape[0] != jnp.shape(inputs)[0]
        or not jnp.issubdtype(decoder_inputs.dtype, jnp.integer)):
      raise ValueError(f"decoder_inputs must be integer ids [batch={jnp.shape(inputs)[0]}, "
                       f"time], got {decoder_inputs.dtype} of shape {decoder_inputs.shape}")
    state, memory = self.encode(inputs, lengths)
    embedded = jnp.swapaxes(self.decoder.embed(decoder_inputs), 0, 1)

    def body(state, e):
      state, logits, weights = self.decoder.step_embedded(state, e, memory)
      return state, (logits, weights)

    _, (logits, weights) = jax.lax.scan(body, state, embedded)
    logits = jnp.swapaxes(logits, 0, 1)
    return (logits, jnp.swapaxes(weights, 0, 1)) if return_attention else logits

  def sample(self, inputs, lengths, *, start_id: int, end_id: int, max_length: int, key=None,
             temperature: float = 0.0, top_k: int = 0):
    """Decodes token by token: greedy (temperature 0, the default) or sampled.
    Returns (ids [B, max_length], lengths [B] up to and including `<end>`)."""
    state, memory = self.encode(inputs, lengths)
    step = lambda state, ids: self.decoder.step(state, ids, memory)[:2]
    first = jnp.full(memory.mask.shape[:1], start_id, jnp.int32)
    key = jax.random.key(0) if key is None else key
    return sample_loop(step, state, first, key, max_length, temperature=temperature,
                       top_k=top_k, end_id=end_id)

  def greedy(self, inputs, lengths, *, start_id: int, end_id: int, max_length: int):
    """The argmax token at every step: (ids [B, max_length], lengths [B])."""
    return self.sample(inputs, lengths, start_id=start_id, end_id=end_id, max_length=max_length)

  def beam_search(self, inputs, lengths, *, beam_size: int, start_id: int, end_id: int,
                  max_length: int, length_penalty: float = 0.0):
    """(ids [B, max_length], lengths [B], log-probabilities [B]) of each row's best beam."""
    beams.check_search(beam_size, max_length)
    state, memory = self.encode(inputs, lengths)
    step = lambda state, ids, memory: self.decoder.step(state, ids, memory)[:2]
    first = jnp.full(memory.mask.shape[:1], start_id, jnp.int32)
    return beams.beam_search(step, state, first, beam_size=beam_size, max_length=max_length,
                             end_id=end_id, length_penalty=length_penalty, constants=memory)


def decoder_inputs(targets, start_id: int):
  """Teacher forcing's inputs: `<start>` then targets [B, T] shifted right by one."""
  targets = jnp.asarray(targets)
  return jnp.concatenate([jnp.full_like(targets[:, :1], start_id), targets[:, :-1]], axis=1)
