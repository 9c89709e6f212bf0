"""Dropout and zoneout for recurrent layers, with every mask drawn once per call, outside the
time loop, so that the scan and the kernels see the same masks.

- input dropout (Gal & Ghahramani 2016): one mask per sequence and input feature [B, D],
  shared over time (and by both directions of a bidirectional layer);
- recurrent dropout (Gal & Ghahramani 2016): one mask per sequence on h where it enters the
  recurrent matmuls, [B, output_size], shared over time (`recurrence`'s h_mask);
- weight dropout (DropConnect, Merity et al. 2018, AWD-LSTM): one mask per call on every
  hidden-to-hidden matrix (the params named R, R_*), shared by the batch;
- zoneout (Krueger et al. 2017): per step and unit, a state keeps its previous value with
  probability zoneout_c (the LSTM's cell) or zoneout_h (h); at evaluation the expected update
  keep = rate.

Dropout masks hold 0 or 1/(1 - rate); zoneout masks 0 or 1 (1: keep the previous value).
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.cells.base import CellDef


def check_rate(name: str, rate) -> float:
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
  return float(rate)


def dropout_mask(key, rate: float, shape, dtype):
  """0 with probability `rate`, else 1 / (1 - rate)."""
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros((), dtype))


def zoneout_mask(key, rate: float, shape, dtype):
  """1 (keep the previous value) with probability `rate`, else 0."""
  return jax.random.bernoulli(key, rate, shape).astype(dtype)


def recurrent_matrices(params) -> tuple[str, ...]:
  """The hidden-to-hidden matrices of a cell's params: R and every R_* (R_n, R_h, R_z, R_gates)."""
  return tuple(k for k in params if k == "R" or k.startswith("R_"))


@dataclasses.dataclass(frozen=True)
class Rates:
  input: float = 0.0
  recurrent: float = 0.0
  weight: float = 0.0
  zoneout_c: float = 0.0
  zoneout_h: float = 0.0

  def __post_init__(self):
    for field, name in (("input", "input_dropout"), ("recurrent", "recurrent_dropout"),
                        ("weight", "weight_dropout"), ("zoneout_c", "zoneout_c"),
                        ("zoneout_h", "zoneout_h")):
      check_rate(name, getattr(self, field))

  @property
  def any(self) -> bool:
    return any(dataclasses.astuple(self))

  def check_cell(self, cell: CellDef) -> None:
    if self.zoneout_c and len(cell.zoneout_widths) == 1:
      raise ValueError(f"zoneout_c acts on the LSTM's cell state; {type(cell).__name__} has only "
                       f"h: use zoneout_h (got zoneout_c={self.zoneout_c})")


class RecurrentDropout(nnx.Module):
  """Draws one layer's masks per call from the "dropout" rng stream, in training only
  (`deterministic=False`; `model.eval()` / `model.train()` switch it, as nnx.Dropout)."""

  def __init__(self, rates: Rates, *, deterministic: bool = False, rngs: nnx.Rngs):
    self.rates = rates
    self.deterministic = deterministic
    self.rngs = rngs["dropout"].fork()

  def set_view(self, deterministic: bool | None = None):
    """Used by `nnx.view`, as nnx.Dropout's."""
    if deterministic is not None:
      self.deterministic = deterministic

  def input_mask(self, batch: int, features: int, dtype):
    """[B, D] or None."""
    if self.deterministic or not self.rates.input:
      return None
    return dropout_mask(self.rngs(), self.rates.input, (batch, features), dtype)

  def __call__(self, cell: CellDef, params, num_steps: int, batch: int, dtype):
    """-> (params with DropConnect applied, options for `recurrence`: h_mask, zoneout)."""
    rates, options = self.rates, {}
    zoneout = (rates.zoneout_c, rates.zoneout_h)[-len(cell.zoneout_widths):]
    if self.deterministic:
      if any(zoneout):  # the expected update
        keeps = tuple(jnp.full((1, 1, 1), rate, dtype) if rate else None for rate in zoneout)
        options["zoneout"] = keeps if len(keeps) == 2 else keeps[0]
      return params, options
    keys = iter(jax.random.split(self.rngs(), 4))
    if rates.weight:
      params, names = dict(params), recurrent_matrices(params)
      for name, key in zip(names, jax.random.split(next(keys), len(names))):
        params[name] = params[name] * dropout_mask(key, rates.weight, params[name].shape,
                                                   params[name].dtype)
    if rates.recurrent:
      options["h_mask"] = dropout_mask(next(keys), rates.recurrent, (batch, cell.output_size),
                                       dtype)
    if any(zoneout):
      widths = cell.zoneout_widths
      keeps = tuple(zoneout_mask(key, rate, (num_steps, batch, width), dtype) if rate else None
                    for rate, width, key in zip(zoneout, widths, jax.random.split(next(keys), 2)))
      options["zoneout"] = keeps if len(keeps) == 2 else keeps[0]
    return params, options
