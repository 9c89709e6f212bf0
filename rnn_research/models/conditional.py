"""One-to-many: generating a sequence from a fixed vector, as image captioning feeds an image
vector to a language model (Vinyals et al. 2015, "Show and Tell").

    model = ConditionalGenerator(model_config, vocab_size, (num_keys, num_meters), rngs=rngs)
    logits = model(ids, lengths, labels)   # ids [B, T] (<start> first), labels [B, 2]: [B, T, V]
    ids, lengths = model.generate(key, labels, num_steps=200, start_id=1, end_id=2)

The condition (here the ids of a tune's key and metre) is embedded, the embeddings concatenated
and mapped by tanh(W c + b) to one input vector, which the backbone reads as step 0, before
`<start>`; the language model then predicts the sequence token by token. Any causal backbone
works (`rnn_research.backbones`); generation steps it with `generation.decoding`.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.backbones import complete, make_backbone
from rnn_research.generation import decoding
from rnn_research.generation.sampling import check_sampling, sample_loop
from rnn_research.models.encoder import check_ids_and_lengths

# The model config keys of the generator besides its backbone's (embed_size None: hidden_size).
CONFIG_KEYS = dict(embed_size=None)


class ConditionalGenerator(nnx.Module):
  """A language model whose first input step is a projected condition vector.

  Args:
    config: model config (backbone, hidden_size, ...; CONFIG_KEYS).
    vocab_size: V, the tokens.
    condition_sizes: the number of values of each categorical condition (C of them).
  """

  def __init__(self, config, vocab_size: int, condition_sizes, *, rngs: nnx.Rngs):
    condition_sizes = tuple(condition_sizes)
    if not condition_sizes or any(not isinstance(n, int) or n < 1 for n in condition_sizes):
      raise ValueError(f"condition_sizes must be positive ints, got {condition_sizes!r}")
    config = complete(config, CONFIG_KEYS)
    width = config.embed_size or config.hidden_size
    self.condition_sizes = condition_sizes
    self.conditions = nnx.List([nnx.Embed(n, width, rngs=rngs) for n in condition_sizes])
    self.project = nnx.Linear(width * len(condition_sizes), width, rngs=rngs)
    self.embed = nnx.Embed(vocab_size, width, rngs=rngs)
    self.backbone = make_backbone(config, width, rngs)
    self.head = nnx.Linear(self.backbone.output_size, vocab_size, rngs=rngs)

  def condition(self, labels):
    """labels [B, C] int -> the backbone's first input [B, width]."""
    labels = jnp.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(self.condition_sizes):
      raise ValueError(f"labels must be [batch, {len(self.condition_sizes)}] ints, got shape "
                       f"{tuple(labels.shape)}")
    vectors = [embed(labels[:, i]) for i, embed in enumerate(self.conditions)]
    return jnp.tanh(self.project(jnp.concatenate(vectors, axis=-1)))

  def __call__(self, inputs, lengths, labels):
    """inputs [B, T] ids (`<start>` first), lengths [B], labels [B, C] -> logits [B, T, V]: row
    t predicts the token after inputs[:, t]."""
    inputs = jnp.asarray(inputs)
    lengths = jnp.asarray(lengths, jnp.int32)
    check_ids_and_lengths(inputs, lengths, embed=True, in_features=0)
    xs = jnp.concatenate([self.condition(labels)[:, None], self.embed(inputs)], axis=1)
    ys, _ = self.backbone(xs, lengths=lengths + 1)
    return self.head(ys[:, 1:])

  def generate(self, key, labels, *, num_steps: int, start_id: int, end_id: int | None = None,
               temperature: float = 1.0, top_k: int = 0):
    """Samples token ids [B, num_steps] and lengths [B] (see `sampling.sample_loop`) for each
    row of labels [B, C]: reads the condition, then `<start>`, then each drawn token."""
    check_sampling(temperature, top_k, self.head.out_features)
    labels = jnp.asarray(labels)
    copy = nnx.merge(*nnx.split(self))
    copy.eval()  # no dropout while generating
    graphdef, state = nnx.split(copy)
    return _generate(graphdef, state, key, labels, num_steps, int(start_id),
                     None if end_id is None else int(end_id), float(temperature), int(top_k))


def _generate_impl(graphdef, state, key, labels, num_steps, start_id, end_id, temperature, top_k):
  model = nnx.merge(graphdef, state)
  batch = labels.shape[0]
  carry = decoding.decode_state(model.backbone, batch, num_steps + 2)
  _, carry = decoding.decode_step(model.backbone, model.condition(labels), carry)

  def step(carry, ids):
    y, carry = decoding.decode_step(model.backbone, model.embed(ids), carry)
    return carry, model.head(y)

  first = jnp.full((batch,), start_id, jnp.int32)
  return sample_loop(step, carry, first, key, num_steps, temperature=temperature, top_k=top_k,
                     end_id=end_id)


_generate = jax.jit(_generate_impl, static_argnums=(0, 4, 5, 6, 7, 8))
