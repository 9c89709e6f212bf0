"""What every recurrent cell is: a frozen definition with pure functions on a parameter dict.

A cell splits one time step into three parts so that a layer can run it fast:

    xp      = input_projection(params, x)                  # no recurrence: all steps at once
    rprojs  = [r @ params[w] for r, w in                     # the recurrent matmuls, one per
               zip(recurrent_inputs(carry), recurrent_weights)]  # weight, batched over gates
    carry', y = pointwise(params, carry, xp, rprojs)        # gate math and the state update

`step` composes them for one step. The layer (`rnn_research.layers`) hoists the input
projection out of the time loop and, in the backward pass, computes every recurrent weight's
gradient as one matmul after the reverse loop. Any matmul that depends on the current step's
gates (the GRU's reset-before-matmul, MGU, MUT) lives inside `pointwise`. Biases join in
`pointwise` too, where they fuse with the add of the recurrent projection instead of costing a
separate pass over the [T, B, width] projection.

The gate math is written once, on per-gate blocks, in `block_pointwise`, which both the scan
(through `pointwise`) and the Pallas kernels (`kernels/`, which never slice a value along its
lanes) call. A cell declares what that takes:

    states         the carry as a tuple of state vectors [B, w] (`carry_states`, `carry_of`;
                   widths `state_widths(N, Ny)`; `output_state` is y, the recurring h)
    xs             `block_xs(params, xp)` [..., G·N], the biases folded in: G blocks [B, N]
    rprojs         per gate the sum of the recurrent matmuls that feed it, or None: weight w
                   reads the states `recurrent_blocks[w][0]` (its row blocks) and writes the
                   gates `recurrent_blocks[w][1]` (its column blocks)
    small          `small_params(params)`: what the gate math reads besides, by `small_names`:
                   vectors [N] (peepholes, gains, biases; a kernel holds them as rows [1, N])
                   and matrices read whole (LSTMP's P, R_n)

and how a kernel may run it: `separable` (the gate math acts column by column, so the hidden
axis may be tiled and heads run apart) and `same_grads` (each gate's projection only meets its
input in a sum, so d rprojs = d xs).

Axis letters in shapes: B batch (any leading dims), D in_features, H or N hidden_size, G gate
blocks.
"""
import dataclasses
import math
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from rnn_research.cells import heads

Array = jax.Array
Params = dict[str, Array]
Carry = Any


def sigmoid(x: Array) -> Array:
  """Logistic sigmoid written as 0.5·tanh(x/2) + 0.5: the same function, and on XLA:CPU one
  tanh is cheaper than the exp and divide of 1 / (1 + e^-x)."""
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


def identity(x: Array) -> Array:
  return x


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": sigmoid,
    "identity": identity,
}


def activation(name: str, argument: str) -> Callable[[Array], Array]:
  """Looks up an activation by name; `argument` names the option in the error message."""
  if name not in ACTIVATIONS:
    raise ValueError(f"{argument} must be one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


def uniform(scale: float):
  """U(-scale, scale), PyTorch's default for every RNN weight with scale = 1/sqrt(H)."""
  def init(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


lecun_normal = jax.nn.initializers.lecun_normal()
orthogonal = jax.nn.initializers.orthogonal()
zeros = jax.nn.initializers.zeros


@dataclasses.dataclass(frozen=True)
class CellDef:
  """Base of every cell definition: sizes and options, no arrays (hashable, so it can be a
  static argument of `jax.jit` and of the kernels).

  Subclasses set the class attributes and implement the abstract methods below.
  """
  in_features: int
  hidden_size: int

  # Names of the params used only by `input_projection`.
  input_params: ClassVar[tuple[str, ...]] = ("W",)

  def __post_init__(self):
    for name in ("in_features", "hidden_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")

  # -- to implement -----------------------------------------------------------------------
  @property
  def recurrent_weights(self) -> tuple[str, ...]:
    """Names of the recurrent matrices, in the order of `recurrent_inputs`."""
    raise NotImplementedError

  @property
  def output_size(self) -> int:
    """Size of the output y at each step."""
    return self.hidden_size

  def param_inits(self) -> dict[str, tuple[tuple[int, ...], Callable]]:
    """{name: (shape, initialiser(key, shape, dtype))} for every parameter."""
    raise NotImplementedError

  def input_projection(self, params: Params, x: Array) -> Array:
    """x: [..., D] -> [..., width]; applied to all time steps at once."""
    return x @ params["W"]

  def recurrent_inputs(self, carry: Carry) -> tuple[Array, ...]:
    """The carry's arrays that the recurrent weights multiply, each [B, rows of its weight]:
    the states of its row blocks (`recurrent_blocks`), side by side."""
    states = self.carry_states(carry)
    return tuple(states[sources[0]] if len(sources) == 1
                 else jnp.concatenate([states[s] for s in sources], axis=-1)
                 for sources, _ in self.recurrent_blocks)

  def initial_carry(self, batch_shape: tuple[int, ...], dtype=jnp.float32) -> Carry:
    """The all-zero carry for a batch (`batch_shape` = the input's leading dims)."""
    return jnp.zeros((*batch_shape, self.hidden_size), dtype)

  # -- the gate math on per-gate blocks (see the module docstring) --------------------------
  num_gates: ClassVar[int] = 1

  @property
  def recurrent_blocks(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Per recurrent weight: (the states its row blocks read, the gates its column blocks
    feed)."""
    return (((self.output_state,), (0,)),)

  @property
  def output_state(self) -> int:
    return 0

  def state_widths(self, n: int, ny: int) -> tuple[int, ...]:
    """Widths of the states for a hidden size n and an output size ny."""
    del ny
    return (n,)

  def carry_states(self, carry: Carry) -> tuple[Array, ...]:
    return (carry,)

  def carry_of(self, states: tuple[Array, ...]) -> Carry:
    return states[0]

  def block_xs(self, params: Params, xp: Array) -> Array:
    """xp [..., G·N] with the biases that only add to it folded in."""
    return xp + params["b"]

  @property
  def small_names(self) -> tuple[str, ...]:
    return ()

  def small_params(self, params: Params) -> dict[str, Array]:
    """{name: vector [N] or matrix} for each of `small_names`."""
    del params
    return {}

  @property
  def separable(self) -> bool:
    return True

  @property
  def same_grads(self) -> bool:
    return True

  def block_pointwise(self, small: dict, states: tuple, xs: tuple,
                      rprojs: tuple) -> tuple[Array, ...]:
    """One step's gate math: small (see `small_params`), the entering states, xs (G blocks
    [B, N], biases in) and rprojs (per gate [B, N], or None where the gate has no recurrent
    term or, with `same_grads`, the caller added it to xs already) -> the new states. The
    arrays may be wider than the cell (the kernels pad N to a tile; the padding stays zero)."""
    raise NotImplementedError

  @property
  def inner_matrix(self) -> str | None:
    """The matrix of `small` the gate math applies to `block_inner_input` when that product is
    all that keeps it from acting column by column (Cho's R_n), or None. Such a cell also
    defines `block_pointwise_inner`, so the persistent kernels can split the matrix over
    thread blocks as they split R and run the gate math in two stages around it."""
    return None

  def block_inner_input(self, small: dict, states: tuple, xs: tuple,
                        rprojs: tuple) -> Array:
    """What `inner_matrix` multiplies [B, N], from the arguments of `block_pointwise`."""
    raise NotImplementedError

  def block_pointwise_inner(self, small: dict, states: tuple, xs: tuple, rprojs: tuple,
                            inner: Array) -> tuple[Array, ...]:
    """`block_pointwise` given inner = block_inner_input(...) @ small[inner_matrix]."""
    raise NotImplementedError

  def gate_projections(self, rprojs: tuple[Array, ...]) -> tuple[Array | None, ...]:
    """The fused recurrent matmuls (one [B, cols] per weight) as per-gate sums."""
    n = self.hidden_size
    out = [None] * self.num_gates
    for rproj, (_, gates) in zip(rprojs, self.recurrent_blocks):
      for k, gate in enumerate(gates):
        block = rproj[..., k * n:(k + 1) * n]
        out[gate] = block if out[gate] is None else out[gate] + block
    return tuple(out)

  def pointwise(self, params: Params, carry: Carry, xp: Array,
                rprojs: tuple[Array, ...]) -> tuple[Carry, Array]:
    """The rest of the step, `block_pointwise` on this cell's own arrays -> (carry, y [B, out]).
    Where each gate's projection only meets its input in a sum (`same_grads`), the two are
    added first, as one [B, G·N] buffer (`materialize`), and passed as the input."""
    xs, gates = self.block_xs(params, xp), None
    if self.same_grads:
      xs = materialize(xs + sum(self._placed(rproj, gates)
                                for rproj, (_, gates) in zip(rprojs, self.recurrent_blocks)))
    else:
      gates = self.gate_projections(rprojs)
    states = self.block_pointwise(self.small_params(params), self.carry_states(carry),
                                  tuple(jnp.split(xs, self.num_gates, axis=-1)),
                                  gates or (None,) * self.num_gates)
    return self.carry_of(states), states[self.output_state]

  def _placed(self, rproj: Array, gates: tuple[int, ...]) -> Array:
    """A weight's projection [B, len(gates)·N] in the columns of its gates of [B, G·N]."""
    n = self.hidden_size
    if gates == tuple(range(gates[0], gates[0] + len(gates))):  # contiguous: pad
      return jnp.pad(rproj, [(0, 0)] * (rproj.ndim - 1)
                     + [(gates[0] * n, (self.num_gates - gates[-1] - 1) * n)])
    out = jnp.zeros((*rproj.shape[:-1], self.num_gates * n), rproj.dtype)
    for k, gate in enumerate(gates):
      out = out.at[..., gate * n:(gate + 1) * n].add(rproj[..., k * n:(k + 1) * n])
    return out

  # -- derived ----------------------------------------------------------------------------
  def init_params(self, key: Array, dtype=jnp.float32) -> Params:
    """Fresh parameters: {name: array} with the shapes of `param_inits`, in `dtype`.

    They are drawn in at least float32 and then cast, so a low-precision dtype (bfloat16,
    float16) gets the same values, rounded, as float32 (the orthogonal initialiser's QR
    accepts no dtype below float32)."""
    inits = self.param_inits()
    keys = jax.random.split(key, len(inits))
    draw_dtype = jnp.promote_types(dtype, jnp.float32)
    return {name: init(k, shape, draw_dtype).astype(dtype)
            for k, (name, (shape, init)) in zip(keys, inits.items())}

  def param_shapes(self) -> dict[str, tuple[int, ...]]:
    return {name: shape for name, (shape, _) in self.param_inits().items()}

  def num_params(self) -> int:
    return sum(math.prod(shape) for shape in self.param_shapes().values())

  def recurrent_projections(self, params: Params, carry: Carry) -> tuple[Array, ...]:
    return tuple(heads.matmul(r, params[w])
                 for r, w in zip(self.recurrent_inputs(carry), self.recurrent_weights))

  # -- regularisation of the carry (see rnn_research.layers.scan) --------------------------
  @property
  def zoneout_widths(self) -> tuple[int, ...]:
    """Widths of the states that zoneout acts on: (h,) for single-state cells."""
    return (self.hidden_size,)

  def drop_recurrent(self, carry: Carry, h_mask: Array) -> Carry:
    """The carry as the recurrent matmuls see it under variational dropout: h ⊙ mask."""
    states = list(self.carry_states(carry))
    states[self.output_state] = states[self.output_state] * h_mask
    return self.carry_of(tuple(states))

  def zoneout(self, previous: Carry, new: Carry, keep) -> tuple[Carry, Array]:
    """h = keep ⊙ h⁻ + (1 − keep) ⊙ h for `keep` [B, N] (or broadcastable) -> (carry, y)."""
    h = mix(keep, previous, new)
    return h, h

  def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
    """One time step: x [B, D] -> (new carry, y [B, out])."""
    xp = self.input_projection(params, x)
    return self.pointwise(params, carry, xp, self.recurrent_projections(params, carry))

  def pointwise_params(self, params: Params) -> Params:
    """The params `pointwise` reads (everything but the input and recurrent weights)."""
    skip = set(self.input_params) | set(self.recurrent_weights)
    return {k: v for k, v in params.items() if k not in skip}

  def check_params(self, params: Params) -> None:
    """Raises ValueError unless `params` has exactly this cell's names and shapes."""
    expected = self.param_shapes()
    if set(params) != set(expected):
      raise ValueError(f"params must have the keys {sorted(expected)}, got {sorted(params)}")
    for name, shape in expected.items():
      if tuple(params[name].shape) != shape:
        raise ValueError(f"params[{name!r}] must have shape {shape}, got "
                         f"{tuple(params[name].shape)}")


def plus(a: Array, b: Array | None) -> Array:
  """a + b; a where b is None (a gate whose projection is already in its input)."""
  return a if b is None else a + b


def mix(keep: Array | None, previous: Array, new: Array) -> Array:
  """Zoneout's update keep ⊙ previous + (1 − keep) ⊙ new; `new` itself where keep is None."""
  return new if keep is None else keep * previous + (1 - keep) * new


LAYER_NORM_EPS = 1e-5


def layer_norm(a: Array, num_blocks: int = 1) -> Array:
  """Normalises each of the `num_blocks` blocks of a's last axis on its own to zero mean and
  unit variance (Ba et al. 2016, without gain or bias): [..., G·N] -> [..., G·N]."""
  blocks = a.reshape(*a.shape[:-1], num_blocks, a.shape[-1] // num_blocks)
  return block_layer_norm(blocks, 1.0, blocks.shape[-1]).reshape(a.shape)


def block_layer_norm(a: Array, gain, n: int) -> Array:
  """Layer norm of a [..., W] over its first n lanes, times gain ([1, W], or a number): the
  lanes past n (a kernel's padding) stay zero in and out."""
  mean = jnp.sum(a, axis=-1, keepdims=True) / n
  centred = a - mean
  if a.shape[-1] != n:
    lane = jax.lax.broadcasted_iota(jnp.int32, a.shape, a.ndim - 1)
    centred = jnp.where(lane < n, centred, 0)
  var = jnp.sum(centred * centred, axis=-1, keepdims=True) / n
  return centred * jax.lax.rsqrt(var + LAYER_NORM_EPS) * gain


def check_cell_clip(cell_clip) -> None:
  if cell_clip is not None and (isinstance(cell_clip, bool)
                                or not isinstance(cell_clip, (int, float)) or cell_clip <= 0):
    raise ValueError(f"cell_clip must be None or a float > 0, got {cell_clip!r}")


def materialize(a: Array) -> Array:
  """Keeps `a` as one buffer. Without this, XLA:CPU fuses `xp + h @ R` into every consumer and
  recomputes it per gate, which made an LSTM step about 1.5x slower on CPU."""
  return jax.lax.optimization_barrier(a)
