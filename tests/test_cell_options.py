"""Cell options of issue 11: layer norm (LSTM, GRU), head-wise recurrence (LSTM, GRU, Elman) and
the LSTM's cell clipping, against the float64 NumPy reference; gradients of the custom backward
pass with them; parameter layouts; bad values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from cases import blocks, gru_weights, random_params, rel_err
from rnn_research.cells import (ElmanDef, GRUCell, GRUDef, LSTMCell, LSTMDef, PRESETS, lstm,
                                lstm_def, lstm_variant)
from rnn_research.layers import run
from rnn_research.torch_weights import params_from_torch

D, H = 3, 6


def dense_from_heads(r):
  """R [K, d, G, d] -> the block-diagonal dense [N, G·N] it stands for, block by block."""
  if r.ndim == 2:
    return np.asarray(r, np.float64)
  heads, d, gates, _ = r.shape
  n = heads * d
  dense = np.zeros((n, gates * n))
  for k in range(heads):
    for g in range(gates):
      dense[k * d:(k + 1) * d, g * n + k * d:g * n + (k + 1) * d] = r[k, :, g, :]
  return dense


def plain(cell, params):
  """The same cell and params without layer norm gains, with a dense R (for the converters)."""
  plain_cell = type(cell)(**{**cell.__dict__, "num_heads": 1,
                             **({"layer_norm": False} if hasattr(cell, "layer_norm") else {})})
  plain_params = {k: v for k, v in params.items() if not k.startswith("ln_")}
  plain_params["R"] = dense_from_heads(np.asarray(params["R"]))
  return plain_cell, plain_params


def gains(params, names, key):
  return dict(zip((f"{key}_{g}" for g in names), blocks(params[f"ln_{key[1]}"], len(names))))


def lstm_reference(cell, params, xs):
  plain_cell, plain_params = plain(cell, params)
  paper = {k: np.asarray(v, np.float64) for k, v in lstm.to_paper(plain_cell, plain_params).items()}
  ln = None
  if cell.layer_norm:
    names = cell.spec.gate_names
    ln = {**gains(params, names, "gx"), **gains(params, names, "gh"),
          "gc": np.asarray(params["ln_c"]), "bc": np.asarray(params["ln_c_bias"])}
  return reference.lstm(paper, cell.spec, xs, ln=ln, cell_clip=cell.cell_clip)


def gru_reference(cell, params, xs):
  plain_cell, plain_params = plain(cell, params)
  ln = None
  if cell.layer_norm:
    ln = {**gains(params, "run", "gx"), **gains(params, "run", "gh")}
  return reference.gru(gru_weights(plain_cell, plain_params), xs,
                       reset_after=cell.reset_after, ln=ln)


def elman_reference(cell, params, xs):
  w = {"W": np.asarray(params["W"]).T, "b": np.asarray(params["b"]),
       "R": dense_from_heads(np.asarray(params["R"])).T}
  return reference.elman(w, xs, activation=cell.activation)


CELLS = {
    "LN-V": (LSTMDef(D, H, PRESETS["V"], layer_norm=True), lstm_reference),
    "LN-CIFG-heads2-clip": (LSTMDef(D, H, PRESETS["CIFG"], cell_clip=0.8, layer_norm=True,
                                    num_heads=2), lstm_reference),
    "LN-NOG-heads3": (LSTMDef(D, H, PRESETS["NOG"], layer_norm=True, num_heads=3),
                      lstm_reference),
    "gru-LN-heads2": (GRUDef(D, H, True, True, 2), gru_reference),
    "gru-cho-LN-heads3": (GRUDef(D, H, False, True, 3), gru_reference),
    "elman-heads2": (ElmanDef(D, H, "tanh", 2), elman_reference),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_options_match_reference(name, rng):
  cell, ref = CELLS[name]
  params = random_params(cell, rng, np.float64, scale=1.0)
  xs = rng.standard_normal((2, 6, D))
  ys, _ = run(cell, params, jnp.asarray(xs))
  assert rel_err(ys, ref(cell, params, xs)[0]) < 1e-12


@pytest.mark.parametrize("name", ["LN-CIFG-heads2-clip", "gru-cho-LN-heads3"])
def test_gradients_match_autodiff(name, rng):
  """The custom backward (head-wise transposed matmuls and weight gradients, LN in the gate
  math) against plain autodiff of `cell.step` under a scan, with lengths."""
  cell, _ = CELLS[name]
  params = random_params(cell, rng, np.float64)
  xs = jnp.asarray(rng.standard_normal((3, 5, D)))
  weights = jnp.asarray(rng.standard_normal((3, 5, cell.output_size)))
  lengths = jnp.array([5, 2, 4])
  valid = (jnp.arange(5)[None, :] < lengths[:, None])[..., None]

  def loss(params, xs):
    ys, final = run(cell, params, xs, lengths=lengths)
    return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final))

  def plain_loss(params, xs):
    def step(carry, inputs):
      x, keep = inputs
      new, y = cell.step(params, carry, x)
      new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, carry)
      return new, jnp.where(keep, y, 0)
    final, ys = jax.lax.scan(step, cell.initial_carry((3,), jnp.float64),
                             (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(valid, 0, 1)))
    return (jnp.sum(jnp.swapaxes(ys, 0, 1) * weights)
            + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final)))

  got, want = jax.jit(lambda p, x: [jax.grad(f, argnums=(0, 1))(p, x)
                                     for f in (loss, plain_loss)])(params, xs)
  for name_, g in got[0].items():
    assert rel_err(g, want[0][name_]) < 1e-12, name_
  assert rel_err(got[1], want[1]) < 1e-12


def test_cell_clip_bounds_the_cell(rng):
  cell = LSTMDef(D, H, PRESETS["NFG"], cell_clip=0.5)  # no forget gate: c grows without clipping
  params = random_params(cell, rng, np.float64)
  xs = jnp.asarray(rng.standard_normal((2, 12, D)) + 2.0)
  cs = {}
  for clip in (None, 0.5):
    c_def = LSTMDef(D, H, PRESETS["NFG"], cell_clip=clip)
    carry, steps = c_def.initial_carry((2,), jnp.float64), []
    for t in range(12):
      carry, _ = c_def.step(params, carry, xs[:, t])
      steps.append(carry.c)
    cs[clip] = np.abs(np.stack(steps))
  assert cs[None].max() > 1.0 and cs[0.5].max() <= 0.5
  _, final = run(cell, params, xs)
  assert np.abs(final.c).max() <= 0.5


def test_options_off_keep_todays_layout_and_outputs(rng):
  """Defaults (cell_clip None, layer_norm False, num_heads 1) are today's cells; a clip too
  large to act gives today's outputs bit for bit."""
  base_cell = LSTMDef(D, H, PRESETS["V"])
  assert base_cell == LSTMDef(D, H, PRESETS["V"], 0, 1.0, None, False, 1)
  assert sorted(base_cell.param_shapes()) == ["R", "W", "b", "p_f", "p_i", "p_o"]
  ln = LSTMDef(D, H, PRESETS["V"], layer_norm=True).param_shapes()
  assert {k: v for k, v in ln.items() if k.startswith("ln_")} == {
      "ln_x": (4 * H,), "ln_h": (4 * H,), "ln_c": (H,), "ln_c_bias": (H,)}
  assert set(GRUDef(D, H, layer_norm=True).param_shapes()) == {"W", "b", "R", "c", "ln_x", "ln_h"}
  params = random_params(base_cell, rng, np.float64)
  xs = jnp.asarray(rng.standard_normal((2, 5, D)))
  ys, _ = run(base_cell, params, xs)
  ys_clip, _ = run(LSTMDef(D, H, PRESETS["V"], cell_clip=1e30), params, xs)
  assert np.array_equal(ys, ys_clip)


def test_layer_norm_gains_start_at_one_and_heads_start_orthogonal():
  cell = LSTMDef(D, 8, PRESETS["NP"], layer_norm=True, num_heads=2)
  params = cell.init_params(jax.random.key(0), jnp.float64)
  assert params["R"].shape == (2, 4, 4, 4)
  assert np.all(params["ln_x"] == 1) and np.all(params["ln_c_bias"] == 0)
  for k in range(2):
    head = np.asarray(params["R"][k]).reshape(4, 16)
    assert np.allclose(head @ head.T, np.eye(4), atol=1e-12)
  assert GRUDef(D, 8, False, num_heads=4).param_shapes()["R"] == (4, 2, 2, 2)
  assert ElmanDef(D, 8, num_heads=8).param_shapes()["R"] == (8, 1, 1, 1)


def test_layer_norm_presets():
  assert lstm_variant("LN-NP") == (PRESETS["NP"], True)
  assert lstm_variant("V") == (PRESETS["V"], False)
  cell = nnx.eval_shape(lambda: LSTMCell(D, H, variant="LN-V", num_heads=3, cell_clip=2.0,
                                         rngs=nnx.Rngs(0))).definition
  assert (cell.layer_norm, cell.num_heads, cell.cell_clip, cell.spec) == (True, 3, 2.0,
                                                                          PRESETS["V"])
  with pytest.raises(ValueError, match="variant must be one of"):
    lstm_variant("LN-FGR")
  # the layer_norm field, as the layers take it, is the same as the "LN-" preset
  assert lstm_def(D, H, "V", layer_norm=True) == lstm_def(D, H, "LN-V") != lstm_def(D, H, "V")


@pytest.mark.parametrize("make, message", [
    (lambda: LSTMDef(D, H, num_heads=4), "num_heads must be a positive int that divides"),
    (lambda: GRUDef(D, H, num_heads=0), "num_heads must be a positive int that divides"),
    (lambda: ElmanDef(D, H, num_heads=5), "divides hidden_size=6"),
    (lambda: LSTMDef(D, H, proj_size=2, num_heads=2), "num_heads=2 is not supported with proj"),
    (lambda: LSTMDef(D, H, PRESETS["FGR"], num_heads=2), "not supported with full_gate"),
    (lambda: LSTMDef(D, H, proj_size=2, layer_norm=True), "layer_norm=True is not supported"),
    (lambda: LSTMDef(D, H, PRESETS["FGR"], layer_norm=True), "not supported with full_gate"),
    (lambda: LSTMDef(D, H, cell_clip=0.0), "cell_clip must be None or a float > 0"),
    (lambda: LSTMDef(D, H, cell_clip=-1.0), "cell_clip must be None or a float > 0"),
    (lambda: GRUDef(D, H, layer_norm=1), "layer_norm must be a bool"),
    (lambda: lstm.to_paper(LSTMDef(D, H, layer_norm=True), {}),
     "to_paper/from_paper need layer_norm=False"),
    (lambda: lstm.paper_names(LSTMDef(D, H, num_heads=2)), "num_heads=1"),
    (lambda: params_from_torch(GRUDef(D, H, num_heads=2), {}), "PyTorch's RNNs have no"),
    (lambda: GRUCell(D, H, num_heads=4, rngs=nnx.Rngs(0)), "divides"),
])
def test_bad_cell_options(make, message):
  with pytest.raises(ValueError, match=message):
    make()
