"""The NNX modules: cells own their parameters and drop into Flax's nnx.RNN; stacks feed each
layer into the next, dropout acts only between layers and only in training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cases import rel_err
from rnn_research.cells import (PRESETS, ElmanCell, GRUCell, LSTMCell, LSTMDef, MGUCell, MUTCell,
                                lstm_def)
from rnn_research.layers import (GRU, LSTM, SimpleRNN, load_torch_state_dict, run,
                                 run_bidirectional)

CELLS = {
    "lstm-V": lambda r: LSTMCell(5, 6, variant="V", rngs=r),
    "lstmp-FGR": lambda r: LSTMCell(5, 6, variant="FGR", proj_size=3, rngs=r),
    "gru-cho": lambda r: GRUCell(5, 6, reset_after=False, rngs=r),
    "elman-relu": lambda r: ElmanCell(5, 6, activation="relu", rngs=r),
    "mgu": lambda r: MGUCell(5, 6, rngs=r),
    "mut3": lambda r: MUTCell(5, 6, variant="MUT3", rngs=r),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cell_drops_into_flax_rnn(name, rng):
  cell = CELLS[name](nnx.Rngs(0))
  xs = jnp.asarray(rng.standard_normal((2, 5, 5)), jnp.float32)
  lengths = jnp.array([5, 3])
  flax_ys = nnx.RNN(cell)(xs, seq_lengths=lengths)
  ours, _ = run(cell.definition, cell.params, xs, lengths=lengths)
  # Flax does not zero outputs past each length; compare the valid steps.
  valid = (jnp.arange(5)[None, :] < lengths[:, None])[..., None]
  assert rel_err(jnp.where(valid, flax_ys, 0), ours) < 1e-5


def test_stack_feeds_each_layer_into_the_next(rng):
  model = LSTM(5, 6, num_layers=3, bidirectional=True, variant="V", rngs=nnx.Rngs(0))
  xs = jnp.asarray(rng.standard_normal((2, 4, 5)), jnp.float32)
  lengths = jnp.array([4, 2])
  ys, carries = model(xs, lengths=lengths)
  expected = xs
  for k, (forward, backward) in enumerate(model.layers):
    expected, final = run_bidirectional(forward.definition, forward.params, backward.params,
                                        expected, lengths=lengths)
    assert rel_err(carries[k][1].c, final[1].c) < 1e-6
  assert ys.shape == (2, 4, 12) and model.output_size == 12
  assert rel_err(ys, expected) < 1e-6


def test_carries_continue_a_sequence(rng):
  model = GRU(5, 6, num_layers=2, rngs=nnx.Rngs(1))
  xs = jnp.asarray(rng.standard_normal((3, 9, 5)), jnp.float32)
  whole, _ = model(xs)
  first, carries = model(xs[:, :4])
  second, _ = model(xs[:, 4:], initial_carry=carries)
  assert rel_err(jnp.concatenate([first, second], 1), whole) < 1e-6


def test_dropout_between_layers_only_in_training(rng):
  model = SimpleRNN(5, 6, num_layers=2, dropout=0.5, rngs=nnx.Rngs(2))
  xs = jnp.asarray(rng.standard_normal((2, 4, 5)), jnp.float32)
  train_a, _ = model(xs)
  train_b, _ = model(xs)
  assert not np.allclose(train_a, train_b)  # a fresh mask per call
  model.eval()
  eval_a, _ = model(xs)
  eval_b, _ = model(xs)
  assert np.array_equal(eval_a, eval_b)
  first, second = model.layers
  hidden, _ = run(first[0].definition, first[0].params, xs)
  expected, _ = run(second[0].definition, second[0].params, hidden)
  assert rel_err(eval_a, expected) < 1e-6


def test_single_layer_dropout_never_touches_outputs_and_warns(rng):
  with pytest.warns(UserWarning, match="dropout=0.9 acts between layers"):
    model = LSTM(5, 6, dropout=0.9, rngs=nnx.Rngs(3))
  xs = jnp.asarray(rng.standard_normal((2, 4, 5)), jnp.float32)
  cell = model.layers[0][0]
  assert np.array_equal(model(xs)[0], run(cell.definition, cell.params, xs)[0])


def test_module_trains_under_jit(rng):
  model = LSTM(5, 6, num_layers=2, variant="CIFG", rngs=nnx.Rngs(4))
  xs = jnp.asarray(rng.standard_normal((4, 7, 5)), jnp.float32)

  @nnx.jit
  def grads(model):
    return nnx.grad(lambda m: jnp.sum(m(xs)[0] ** 2))(model)

  g = grads(model)
  leaves = jax.tree.leaves(nnx.state(g, nnx.Param))
  assert leaves and all(float(jnp.abs(leaf).sum()) > 0 for leaf in leaves)


def test_load_params_checks_shapes():
  cell = LSTMCell(5, 6, variant="NP", rngs=nnx.Rngs(0))
  params = cell.params
  params["R"] = jnp.zeros((6, 6))
  with pytest.raises(ValueError, match=r"params\['R'\] must have shape \(6, 24\)"):
    cell.load_params(params)


@pytest.mark.parametrize("make, message", [
    (lambda: LSTM(5, 6, dropout=1.0, rngs=nnx.Rngs(0)), r"dropout must be in \[0, 1\)"),
    (lambda: LSTM(5, 6, dropout=-0.1, rngs=nnx.Rngs(0)), r"dropout must be in \[0, 1\)"),
    (lambda: LSTM(5, 6, num_layers=0, rngs=nnx.Rngs(0)), "num_layers"),
    (lambda: LSTM(5, 6, proj_size=6, rngs=nnx.Rngs(0)), "proj_size"),
    (lambda: LSTM(5, 6, variant="vanilla", rngs=nnx.Rngs(0)), "variant must be one of"),
    (lambda: GRU(5, 6, backend="triton", rngs=nnx.Rngs(0)), "backend must be one of"),
    (lambda: GRU(5, 6, backend="cudnn", rngs=nnx.Rngs(0)), "backend='cudnn' runs cuDNN's LSTM"),
])
def test_bad_module_arguments(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_wrong_number_of_initial_carries():
  model = LSTM(5, 6, num_layers=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="one carry per layer"):
    model(jnp.zeros((1, 3, 5)), initial_carry=(None,))


def test_lstm_cell_and_layer_share_one_default_variant(rng):
  """NP, PyTorch's LSTM: the cell, the layer and the definition agree, and a PyTorch nn.LSTM
  state dict loads into a layer built without naming a variant."""
  cell, layer = LSTMCell(5, 6, rngs=nnx.Rngs(0)), LSTM(5, 6, rngs=nnx.Rngs(0))
  assert cell.definition == layer.layers[0][0].definition == LSTMDef(5, 6) == lstm_def(5, 6)
  assert cell.definition.spec == PRESETS["NP"] and "p_i" not in cell.params
  shapes = {"weight_ih_l0": (24, 5), "weight_hh_l0": (24, 6), "bias_ih_l0": (24,),
            "bias_hh_l0": (24,)}
  state_dict = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
  load_torch_state_dict(layer, state_dict)
  np.testing.assert_allclose(layer.layers[0][0].params["R"][:, :6],  # the z (PyTorch's g) rows
                             state_dict["weight_hh_l0"][12:18].T)
