"""The recurrence's per-call options, checked once where a sequence is run (`check`) into an
`Options` value that the scan (`layers.scan`) and the kernels (`kernels.rnn`) take as it
is.

Time-major shapes: T time, B batch; `w` a zoneout state's width (`cell.zoneout_widths`).
"""
import dataclasses
import math
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Options:
  """resets: bool [T, B] or None, already off past each sequence's length. h_mask: float
  [B, output_size] or None. keeps: None, or per zoneout state None or float [T|1, B|1, w|1].
  grad_clip: float > 0 or None. remat: None, an int >= 1 or "sqrt"."""
  resets: Any = None
  h_mask: Any = None
  keeps: tuple | None = None
  grad_clip: float | None = None
  remat: Any = None


def check(cell, num_steps: int, batch: int, lengths=None, *, resets=None, h_mask=None,
          zoneout=None, grad_clip=None, remat=None) -> Options:
  """The options of a recurrence of `cell` over [T=num_steps, B=batch], checked; ValueError
  naming the option and what was expected.

  resets: bool [T, B] (integers read as 0 / nonzero); h_mask: float [B, output_size];
  zoneout: for a cell with two zoneout states (the LSTM's c and h) a pair (keep_c, keep_h),
  else one array keep_h, each None or float broadcastable to [T, B, width]; grad_clip: None or
  a float > 0; remat: None, an int >= 1 or "sqrt"."""
  check_grad_clip(grad_clip)
  check_remat(remat)
  if resets is not None:
    resets = _check_resets(resets, num_steps, batch)
    if lengths is not None:  # past its length a sequence's carry stays as it is
      resets = resets & (jnp.arange(num_steps)[:, None] < lengths[None, :])
  if h_mask is not None:
    h_mask = jnp.asarray(h_mask)
    if h_mask.shape != (batch, cell.output_size) or not jnp.issubdtype(h_mask.dtype,
                                                                       jnp.floating):
      raise ValueError(f"h_mask must be float of shape [batch, output_size]=({batch}, "
                       f"{cell.output_size}), got {h_mask.dtype} of shape {tuple(h_mask.shape)}")
  keeps = None if zoneout is None else _check_zoneout(cell, zoneout, num_steps, batch)
  return Options(resets, h_mask, keeps, grad_clip, remat)


def _check_resets(resets, num_steps: int, batch: int):
  resets = jnp.asarray(resets)
  if resets.shape != (num_steps, batch) or not (
      resets.dtype == jnp.bool_ or jnp.issubdtype(resets.dtype, jnp.integer)):
    raise ValueError(f"resets must be bool of shape [time, batch]=({num_steps}, {batch}), "
                     f"got {resets.dtype} of shape {tuple(resets.shape)}")
  return resets.astype(bool)


def _check_zoneout(cell, zoneout, num_steps: int, batch: int) -> tuple:
  widths = cell.zoneout_widths
  pair = len(widths) == 2
  if pair != isinstance(zoneout, (tuple, list)) or (pair and len(zoneout) != 2):
    form = "a pair (keep_c, keep_h)" if pair else "one array keep_h"
    raise ValueError(f"zoneout must be None or {form} for {type(cell).__name__}, got "
                     f"{type(zoneout).__name__}")
  keeps = []
  for keep, width in zip(zoneout if pair else (zoneout,), widths):
    if keep is not None:
      keep = jnp.asarray(keep)
      full = (num_steps, batch, width)
      broadcasts = all(a in (1, b) for a, b in zip(keep.shape[::-1], full[::-1]))
      if keep.ndim > 3 or not jnp.issubdtype(keep.dtype, jnp.floating) or not broadcasts:
        raise ValueError(f"zoneout weights must be float and broadcast to [time, batch, width]="
                         f"{full}, got {keep.dtype} of shape {tuple(keep.shape)}")
      keep = keep.reshape((1,) * (3 - keep.ndim) + keep.shape)
    keeps.append(keep)
  return tuple(keeps)


def check_grad_clip(grad_clip) -> None:
  if grad_clip is not None and (isinstance(grad_clip, bool)
                                or not isinstance(grad_clip, (int, float)) or grad_clip <= 0):
    raise ValueError(f"grad_clip must be None or a float > 0, got {grad_clip!r}")


def check_remat(remat) -> None:
  if remat is not None and remat != "sqrt" and (
      isinstance(remat, bool) or not isinstance(remat, int) or remat < 1):
    raise ValueError(f"remat must be None, a positive int or 'sqrt', got {remat!r}")


def segment_length(num_steps: int, remat) -> int | None:
  """The steps between kept carries for `remat` (None: keep every carry). "sqrt" takes the
  divisor of T nearest to sqrt(T) when one lies within a factor 2 of it (no padding), else
  ceil(sqrt(T))."""
  check_remat(remat)
  if remat is None:
    return None
  if remat == "sqrt":
    root = math.sqrt(num_steps)
    divisors = [k for k in range(math.ceil(root / 2), int(2 * root) + 1) if num_steps % k == 0]
    return min(divisors, key=lambda k: abs(k - root)) if divisors else math.ceil(root)
  return min(remat, num_steps)
