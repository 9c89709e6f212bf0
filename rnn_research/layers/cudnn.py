"""backend="cudnn": the NP LSTM on NVIDIA GPUs through cuDNN (`jax.experimental.rnn.lstm`).

cuDNN's LSTM is PyTorch's nn.LSTM: no peepholes, gate blocks (i, f, g, o), W_ih [4N, D],
W_hh [4N, N] and two biases, packed for one layer and direction into one flat vector
(W_ih, W_hh, b_ih, b_hh; the layout in jax.experimental.rnn's docstring). `pack` builds it from
this library's W [D, 4N], R [N, 4N], b [4N] (gates z, i, f, o; z = g) with `b` as b_ih and
b_hh zero, in jnp, so gradients reach the params through it.

`layers.run` calls `lstm` for one layer in one direction on whole sequences (cuDNN projects the
inputs itself, so `recurrence`, which takes input projections, does not offer it); reverse,
bidirectional and stacks are `run`'s, lengths cuDNN's. What cuDNN's LSTM cannot express is
refused with a ValueError: other cells and variants, proj_size, layer_norm, num_heads,
cell_clip, resets, recurrent dropout (h_mask), zoneout, grad_clip, dtypes other than float32
(jax.experimental.rnn's own limit) and platforms other than CUDA. `remat` and `unroll` do not
change the function and are ignored (cuDNN keeps its own reserve space for the backward pass).
Input, weight and between-layer dropout act on the inputs and params and work as on any backend.
"""
import jax
import jax.numpy as jnp
from jax.experimental import rnn as jax_rnn

from rnn_research.cells.lstm import PRESETS, LSTMCarry, LSTMDef
from rnn_research.layers.options import Options
from rnn_research.torch_weights import lstm_to_torch

_ALTERNATIVES = "use backend='scan', 'pallas' or 'auto'"


def check_cell(cell) -> None:
  """ValueError unless `cell` is an LSTM cuDNN runs: variant NP (or classic) and none of
  proj_size, layer_norm, num_heads > 1, cell_clip."""
  if not isinstance(cell, LSTMDef) or cell.spec != PRESETS["NP"]:
    got = (f"LSTMDef with spec {cell.spec}" if isinstance(cell, LSTMDef)
           else type(cell).__name__)
    raise ValueError(f"backend='cudnn' runs cuDNN's LSTM, the no-peephole LSTM: an LSTMDef of "
                     f"variant 'NP' (or 'classic'), got {got}; {_ALTERNATIVES}")
  unsupported = {"proj_size": cell.proj_size != 0, "layer_norm": cell.layer_norm,
                 "num_heads": cell.num_heads != 1, "cell_clip": cell.cell_clip is not None}
  if any(unsupported.values()):
    raise ValueError(f"backend='cudnn' supports none of proj_size, layer_norm, num_heads > 1, "
                     f"cell_clip; got {[k for k, on in unsupported.items() if on]}; "
                     f"{_ALTERNATIVES}")


def check_options(*, resets: bool, recurrent_dropout: bool, zoneout: bool,
                  grad_clip: bool) -> None:
  """ValueError naming the recurrence options that are set (True), none of which cuDNN has."""
  given = [name for name, on in (("resets", resets), ("recurrent_dropout (h_mask)",
                                                      recurrent_dropout),
                                 ("zoneout", zoneout), ("grad_clip", grad_clip)) if on]
  if given:
    raise ValueError(f"backend='cudnn' runs cuDNN's LSTM, which has no resets, recurrent "
                     f"dropout, zoneout or grad_clip; got {given}; use backend='scan' or "
                     f"'pallas'")


def check_platform() -> None:
  """ValueError unless this process computes on an NVIDIA GPU (cuDNN)."""
  try:
    cuda = jax.default_backend() in ("gpu", "cuda") and bool(jax.devices("cuda"))
  except RuntimeError:  # no CUDA backend in this process (CPU, TPU, ROCm)
    cuda = False
  if not cuda:
    raise ValueError(f"backend='cudnn' runs cuDNN's LSTM on NVIDIA GPUs; this process computes "
                     f"on {jax.default_backend()!r}: {_ALTERNATIVES}")


def pack(cell: LSTMDef, params) -> jax.Array:
  """The flat cuDNN weights of one layer and direction (jax.experimental.rnn's layout)."""
  w = lstm_to_torch(cell, params)
  return jnp.concatenate([w["weight_ih"].ravel(), w["weight_hh"].ravel(), w["bias_ih"],
                          w["bias_hh"]])


def lstm(cell: LSTMDef, params, xs, carry0: LSTMCarry, lengths, checked: Options):
  """Runs the LSTM over time-major xs [T, B, D] on cuDNN from carry0 (c, h [B, N]).

  lengths: optional int [B]; steps past a sequence's end output zeros and leave its carry
  as it was. Returns (final LSTMCarry, ys [T, B, N])."""
  check_cell(cell)
  check_options(resets=checked.resets is not None, recurrent_dropout=checked.h_mask is not None,
                zoneout=checked.keeps is not None, grad_clip=checked.grad_clip is not None)
  dtypes = {jnp.dtype(a.dtype).name for a in (xs, *jax.tree.leaves(params))}
  if dtypes != {"float32"}:
    raise ValueError(f"backend='cudnn' needs float32 inputs and params (jax.experimental.rnn), "
                     f"got {sorted(dtypes)}; {_ALTERNATIVES}")
  check_platform()
  num_steps, batch, in_features = xs.shape
  seq_lengths = (jnp.full((batch,), num_steps, jnp.int32) if lengths is None
                 else lengths.astype(jnp.int32))
  ys, h_n, c_n = jax_rnn.lstm(
      jnp.swapaxes(xs, 0, 1), carry0.h[None], carry0.c[None], pack(cell, params), seq_lengths,
      input_size=in_features, hidden_size=cell.hidden_size, num_layers=1, dropout=0.0,
      bidirectional=False)
  return LSTMCarry(c_n[0], h_n[0]), jnp.swapaxes(ys, 0, 1)
