"""PyTorch parity from committed golden files (made by golden/make_torch_golden.py with torch;
torch is not imported here): weights load exactly, outputs, final states and gradients agree."""
import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cases import rel_err
from rnn_research.cells import LSTMCarry
from rnn_research.layers import GRU, LSTM, SimpleRNN, load_torch_state_dict
from rnn_research.torch_weights import params_from_torch

GOLDEN = sorted((pathlib.Path(__file__).parent / "golden").glob("*.npz"))


def build(name, config, in_features):
  kwargs = dict(num_layers=config.get("num_layers", 1),
                bidirectional=config.get("bidirectional", False), param_dtype=jnp.float64,
                rngs=nnx.Rngs(0))
  if name.startswith("lstm"):
    return LSTM(in_features, config["hidden_size"], proj_size=config.get("proj_size", 0),
                variant="NP", **kwargs)
  if name.startswith("gru"):
    return GRU(in_features, config["hidden_size"], **kwargs)
  return SimpleRNN(in_features, config["hidden_size"],
                   nonlinearity=config.get("nonlinearity", "tanh"), **kwargs)


def final_states(model, carries, field):
  """Our per-layer carries in PyTorch's h_n/c_n layout [layers·directions, B, ·]."""
  per_direction = [c for carry in carries for c in (carry if model.bidirectional else (carry,))]
  return jnp.stack([getattr(c, field) if isinstance(c, LSTMCarry) else c for c in per_direction])


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_matches_pytorch(path):
  data = dict(np.load(path))
  name, config = path.stem, ast.literal_eval(str(data["config"]))
  state_dict = {k[3:]: v for k, v in data.items() if k.startswith("sd/")}
  model = build(name, config, data["x"].shape[-1])
  load_torch_state_dict(model, state_dict)
  lengths = jnp.asarray(data["lengths"])
  graph, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params, x):
    ys, carries = nnx.merge(graph, params, rest)(x, lengths=lengths)
    return jnp.sum(ys * data["weights"]), (ys, carries)

  (_, (ys, carries)), (d_params, d_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      params, jnp.asarray(data["x"]))
  assert rel_err(ys, data["y"]) < 1e-12
  assert rel_err(final_states(model, carries, "h"), data["h_n"]) < 1e-12
  if "c_n" in data:
    assert rel_err(final_states(model, carries, "c"), data["c_n"]) < 1e-12
  assert rel_err(d_x, data["grad/x"]) < 1e-12

  # Weight gradients: convert PyTorch's with the same importer. Where the two biases are one
  # sum (LSTM, RNN), the sum's gradient equals each bias's, so drop bias_hh before summing.
  torch_grads = {k[5:]: v for k, v in data.items() if k.startswith("grad/") and k != "grad/x"}
  if not name.startswith("gru"):
    torch_grads.update({k: np.zeros_like(v) for k, v in torch_grads.items() if "bias_hh" in k})
  model_grads = nnx.merge(graph, d_params, rest)
  for k, layer in enumerate(model_grads.layers):
    for direction, cell in enumerate(layer):
      expected = params_from_torch(cell.definition, torch_grads, k, reverse=direction == 1)
      for key, value in cell.params.items():
        assert rel_err(value, expected[key]) < 1e-11, (k, direction, key)


def test_import_refuses_peephole_lstm():
  model = LSTM(5, 6, variant="V", rngs=nnx.Rngs(0))
  state_dict = {k[3:]: v for k, v in np.load(GOLDEN[0].parent / "lstm.npz").items()
                if k.startswith("sd/")}
  with pytest.raises(ValueError, match="variant='NP'"):
    load_torch_state_dict(model, state_dict)


def test_import_names_missing_tensors():
  model = GRU(5, 6, num_layers=2, rngs=nnx.Rngs(0))
  state_dict = {k[3:]: v for k, v in np.load(GOLDEN[0].parent / "gru.npz").items()
                if k.startswith("sd/")}
  with pytest.raises(ValueError, match="weight_ih_l1"):
    load_torch_state_dict(model, state_dict)
