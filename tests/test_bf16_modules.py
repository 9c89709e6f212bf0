"""Every cell and layer module builds and runs with bfloat16 parameters: they are drawn in
float32 (the orthogonal initialiser's QR accepts nothing below it) and rounded, so a bf16 model
is its float32 twin up to bf16 rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cases import rel_err
from rnn_research.cells import GRUCell, LSTMCell, MGUCell, MUTCell, ElmanCell
from rnn_research.layers import GRU, LSTM, SimpleRNN, run

D, H = 5, 8

CELLS = {
    **{f"lstm-{v}": lambda dt, v=v: LSTMCell(D, H, variant=v, param_dtype=dt, rngs=nnx.Rngs(0))
       for v in ("V", "NP", "FGR", "LN-V")},
    "lstmp": lambda dt: LSTMCell(D, H, proj_size=3, param_dtype=dt, rngs=nnx.Rngs(0)),
    "lstm-heads": lambda dt: LSTMCell(D, H, num_heads=2, param_dtype=dt, rngs=nnx.Rngs(0)),
    "gru-torch": lambda dt: GRUCell(D, H, param_dtype=dt, rngs=nnx.Rngs(0)),
    "gru-cho": lambda dt: GRUCell(D, H, reset_after=False, param_dtype=dt, rngs=nnx.Rngs(0)),
    "gru-ln": lambda dt: GRUCell(D, H, layer_norm=True, param_dtype=dt, rngs=nnx.Rngs(0)),
    "elman-heads": lambda dt: ElmanCell(D, H, num_heads=4, param_dtype=dt, rngs=nnx.Rngs(0)),
    "mgu": lambda dt: MGUCell(D, H, param_dtype=dt, rngs=nnx.Rngs(0)),
    **{f"mut-{v}": lambda dt, v=v: MUTCell(D, D, variant=v, param_dtype=dt, rngs=nnx.Rngs(0))
       for v in ("MUT1", "MUT2")},
}

LAYERS = {
    "LSTM": lambda dt: LSTM(D, H, num_layers=2, param_dtype=dt, rngs=nnx.Rngs(0)),
    "LSTM-V-bidirectional": lambda dt: LSTM(D, H, variant="V", bidirectional=True,
                                            param_dtype=dt, rngs=nnx.Rngs(0)),
    "GRU": lambda dt: GRU(D, H, num_layers=2, param_dtype=dt, rngs=nnx.Rngs(0)),
    "GRU-cho": lambda dt: GRU(D, H, reset_after=False, param_dtype=dt, rngs=nnx.Rngs(0)),
    "SimpleRNN": lambda dt: SimpleRNN(D, H, param_dtype=dt, rngs=nnx.Rngs(0)),
}


def _params(module):
  return nnx.state(module, nnx.Param)


def _assert_rounded_twin(bf16_module, f32_module):
  """Every bf16 parameter is bf16 and equals its float32 twin's value rounded to bf16."""
  bf16_leaves = jax.tree.leaves(_params(bf16_module))
  f32_leaves = jax.tree.leaves(_params(f32_module))
  assert bf16_leaves and len(bf16_leaves) == len(f32_leaves)
  for low, high in zip(bf16_leaves, f32_leaves):
    assert low.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(low, np.float32),
                                  np.asarray(high.astype(jnp.bfloat16), np.float32))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_bf16_cell_is_its_float32_twin_rounded(name, rng):
  cell, twin = CELLS[name](jnp.bfloat16), CELLS[name](jnp.float32)
  _assert_rounded_twin(cell, twin)
  xs = rng.standard_normal((2, 6, D))
  ys, _ = run(cell.definition, cell.params, jnp.asarray(xs, jnp.bfloat16))
  expected, _ = run(twin.definition, twin.params, jnp.asarray(xs, jnp.float32))
  assert ys.dtype == jnp.bfloat16
  assert rel_err(ys, expected) < 5e-2


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_bf16_layer_runs_and_differentiates(name, rng):
  model, twin = LAYERS[name](jnp.bfloat16), LAYERS[name](jnp.float32)
  _assert_rounded_twin(model, twin)
  xs = rng.standard_normal((3, 7, D))
  ys, _ = model(jnp.asarray(xs, jnp.bfloat16))
  expected, _ = twin(jnp.asarray(xs, jnp.float32))
  assert ys.dtype == jnp.bfloat16
  assert rel_err(ys, expected) < 5e-2
  grads = nnx.grad(lambda m: jnp.sum(m(jnp.asarray(xs, jnp.bfloat16))[0].astype(jnp.float32)
                                     ** 2))(model)
  leaves = jax.tree.leaves(_params(grads))
  assert all(leaf.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
  assert all(float(jnp.abs(leaf.astype(jnp.float32)).sum()) > 0 for leaf in leaves)
