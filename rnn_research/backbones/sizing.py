"""Matching parameter counts: the width at which a model has a given number of parameters, so
that backbones are compared at equal size.

    width = match_width(lambda h: NextStepModel(config_with(h), 88, 88, rngs=nnx.Rngs(0)), 200_000)

Counts come from the real model, built abstractly (`nnx.eval_shape`: shapes only, no arrays).
"""
from typing import Callable

import jax
from flax import nnx


def count_params(make_model: Callable[[], nnx.Module]) -> int:
  """Trainable parameters (`nnx.Param` entries) of the model `make_model()` builds."""
  model = nnx.eval_shape(make_model)
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def match_width(make_model: Callable[[int], nnx.Module], target: int, *, step: int = 1,
                max_width: int = 8192) -> int:
  """The width, a multiple of `step` in [step, max_width], whose model `make_model(width)` has
  the parameter count closest to `target` (the smaller width on a tie).

  Bisection over multiples of `step`, so the count must grow with the width (it does for every
  backbone here: each weight matrix has the width as a side).
  """
  for name, value in (("target", target), ("step", step), ("max_width", max_width)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if max_width < step:
    raise ValueError(f"max_width must be >= step={step}, got {max_width}")
  count = lambda k: count_params(lambda: make_model(k * step))
  low, high = 1, max_width // step  # find the first multiple whose count reaches the target
  if count(high) < target:
    raise ValueError(f"even width {high * step} has only {count(high)} parameters, fewer than "
                     f"target={target}; raise max_width")
  while low < high:
    middle = (low + high) // 2
    if count(middle) >= target:
      high = middle
    else:
      low = middle + 1
  if low > 1 and target - count(low - 1) <= count(low) - target:
    low -= 1
  return low * step
