"""`summary`: per-submodule parameter shapes and counts, and a call's output shapes, for the
layers (where nnx.tabulate fails) and for a user's model around them."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import rnn_research as rr
from rnn_research.summaries import output_shapes, parameter_rows


def total_params(module) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_stacked_bidirectional_lstm_rows_match_each_cell():
  model = rr.LSTM(3, 4, 2, bidirectional=True, dropout=0.1, rngs=nnx.Rngs(0, dropout=1))
  rows = parameter_rows(model)
  assert [row.path for row in rows] == ["layers/0/0", "layers/0/1", "layers/1/0", "layers/1/1"]
  for row, cell in zip(rows, [cell for layer in model.layers for cell in layer]):
    assert row.kind == "CellModule[LSTMDef]"
    assert row.count == cell.definition.num_params()
    assert row.params == {name: (tuple(shape), "float32")
                          for name, shape in cell.definition.param_shapes().items()}
  assert rows[2].params["W"][0] == (8, 16)  # layer 1 reads both directions of layer 0
  text = rr.summary(model, jnp.ones((2, 5, 3), jnp.float32))
  assert "total       LSTM" in text and text.split("\n")[-2].endswith(f"{total_params(model):,}")
  assert text.split("\n")[-1].startswith("outputs: (float32[2,5,8], ((LSTMCarry(c=float32[2,4]")


def test_summary_runs_nothing_and_leaves_the_state_as_it_was():
  model = rr.GRU(3, 4, 2, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
  xs = jnp.ones((2, 5, 3), jnp.float32)
  state = lambda: [np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(
      leaf.dtype, jax.dtypes.prng_key) else leaf) for leaf in jax.tree.leaves(nnx.state(model))]
  before = state()
  assert output_shapes(model, xs)[0] == "float32[2,5,4]"
  same = lambda: all(np.array_equal(a, b) for a, b in zip(before, state()))
  assert same()
  model(xs)  # a real call draws a dropout mask: the random stream moves on
  assert not same()


def test_gru_and_stack_of_any_cell():
  gru = rr.GRU(3, 4, rngs=nnx.Rngs(0))
  (row,) = parameter_rows(gru)
  assert row.kind == "CellModule[GRUDef]" and set(row.params) == {"W", "b", "R", "c"}
  assert row.count == gru.layers[0][0].definition.num_params() == total_params(gru)
  stack = rr.StackedRNN(rr.MUTDef(3, 5, variant="MUT3"), num_layers=2, rngs=nnx.Rngs(0))
  rows = parameter_rows(stack)
  assert [row.kind for row in rows] == ["CellModule[MUTDef]"] * 2
  assert sum(row.count for row in rows) == total_params(stack)
  assert "outputs: (float32[4,7,5], (float32[4,5], float32[4,5]))" in rr.summary(
      stack, jnp.ones((4, 7, 3), jnp.float32))


def test_a_model_around_the_layers():
  class Tagger(nnx.Module):
    def __init__(self, rngs):
      self.rnn, self.head = rr.LSTM(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, xs):
      return self.head(self.rnn(xs)[0])

  model = Tagger(nnx.Rngs(0))
  rows = {row.path: row for row in parameter_rows(model)}
  assert rows["head"].params == {"bias": ((2,), "float32"), "kernel": ((4, 2), "float32")}
  assert rows["rnn/layers/0/0"].count == 4 * 4 * (3 + 4 + 1)  # NP: W, R and one bias per gate
  assert rr.summary(model, jnp.ones((2, 5, 3), jnp.float32)).endswith("outputs: float32[2,5,2]")
