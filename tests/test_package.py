"""`import rnn_research as rr`: the layers, cells and functions by name, and the version."""
import importlib.metadata
import subprocess
import sys

import jax.numpy as jnp
from flax import nnx

import rnn_research as rr
from rnn_research import layers


def test_the_package_names_the_layers_cells_and_its_version():
  assert rr.__version__ == importlib.metadata.version("rnn_research")
  assert rr.LSTM is layers.LSTM and rr.run is layers.run
  ys, _ = rr.StackedRNN(rr.MUTDef(3, 5, variant="MUT3"), num_layers=2, rngs=nnx.Rngs(0))(
      jnp.ones((2, 4, 3)))
  assert ys.shape == (2, 4, 5)
  assert set(rr.__all__) <= set(dir(rr))  # tab completion sees the lazily imported names


def test_importing_a_module_does_not_import_the_layers():
  code = ("import sys, rnn_research.workdir; "
          "print('rnn_research.layers' in sys.modules)")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert run.stdout.strip() == "False"
