"""Language models on long streams of concatenated documents, trained with truncated
backpropagation through time (`layers.tbptt`): a window of T steps is cut into chunks; the
carry flows forward from chunk to chunk, the gradient stops at every chunk boundary, and the
carry restarts from zeros where a new document begins.

    total, count = tbptt_loss(model, ids, resets, targets, mask, k1=32, k2=32)

`model` is a next-step model (`models.NextStepModel`: `embed`, a recurrent `backbone`, `head`);
ids, targets [B, T] int; resets, mask [B, T] bool (resets: True at each document's first step).
The gradient of the returned sum is the sum of every chunk's truncated gradient.
"""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rnn_research.layers import StackedRNN
from rnn_research.layers import tbptt


def check_recurrent(model) -> None:
  if not isinstance(getattr(model, "backbone", None), StackedRNN):
    raise ValueError("streams need a recurrent backbone (model.backbone 'lstm', 'gru' or "
                     f"'rnn'), got {type(getattr(model, 'backbone', None)).__name__}")


def run_with_resets(model, ids, resets, carry=None):
  """(logits [B, T, V], final carry) of ids [B, T] read from `carry` (None: zeros), the carry
  restarting from zeros at each step where resets [B, T] is set.

  The layers' `resets` restore the carry a run started from, so a run from `carry` cannot
  restart at zeros. Two runs do it: one from `carry` without resets, one from zeros with them;
  each row takes the first up to its first reset in the window and the second from there on.
  """
  xs = model.embed(ids)
  fresh, fresh_final = model.backbone(xs, resets=resets)
  if carry is None:
    return model.head(fresh), fresh_final
  continued, continued_final = model.backbone(xs, initial_carry=carry)
  restarted = jnp.cumsum(resets, axis=1) > 0  # [B, T]: a document began at or before t
  ys = jnp.where(restarted[..., None], fresh, continued)
  final = jax.tree.map(
      lambda f, c: jnp.where(restarted[:, -1].reshape((-1,) + (1,) * (f.ndim - 1)), f, c),
      fresh_final, continued_final)
  return model.head(ys), final


def tbptt_loss(model, ids, resets, targets, mask, *, k1: int, k2: int | None = None):
  """(cross-entropy summed over the masked steps, their number) of a window, the gradient
  truncated as TBPTT(k1, k2) (`layers.tbptt.chunks`; k2 defaults to k1)."""
  check_recurrent(model)
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  # The chunks slice one array: ids and resets side by side, targets and mask side by side.
  xs = jnp.stack([ids, resets.astype(ids.dtype)], axis=-1)
  ys = jnp.stack([targets, mask.astype(targets.dtype)], axis=-1)

  def apply(params, xs, carry):
    return run_with_resets(nnx.merge(graphdef, params, other), xs[..., 0],
                           xs[..., 1].astype(bool), carry)

  def loss_fn(logits, ys):
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, ys[..., 0])
    scored = ys[..., 1].astype(bool)
    return jnp.sum(jnp.where(scored, losses, 0.0)), jnp.sum(scored)

  total, count, carry = 0.0, 0, None
  for chunk in tbptt.chunks(ids.shape[1], k1, k1 if k2 is None else k2):
    (chunk_total, chunk_count), carry = tbptt.chunk_loss(apply, loss_fn, params, carry, xs, ys,
                                                         chunk)
    total, count = total + chunk_total, count + chunk_count
  return total, count
