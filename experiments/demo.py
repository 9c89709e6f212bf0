"""The main job until the Odyssey study lands: train an LSTM on the adding problem
(Hochreiter & Schmidhuber 1997) and print its loss curve against the trivial baseline.

    python -m experiments.demo                                  # about a minute on a laptop CPU
    python -m experiments.demo --config.variant=CIFG --config.length=50 --config.steps=1000
    python -m experiments.demo --config=experiments/demo.py:smoke   # seconds, used by the tests

Expected: the mean squared error falls from about 0.17 (predicting the mean, 1/6) to below
0.01 within 400 steps at length 30.
"""
import numpy as np
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import app
from flax import nnx
from ml_collections import config_flags

from rnn_research.data.synthetic import adding_baseline, adding_problem
from rnn_research.layers import LSTM


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      variant="V", hidden_size=32, length=30, batch_size=64, steps=400, learning_rate=1e-2,
      log_every=25, seed=0))
  if arg == "smoke":
    config.update(length=10, steps=150, log_every=50)
  config.lock()
  return config


class Regressor(nnx.Module):
  """LSTM over the sequence, a linear read-out of the last step's output."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.rnn = LSTM(2, config.hidden_size, variant=config.variant, rngs=rngs)
    self.head = nnx.Linear(config.hidden_size, 1, rngs=rngs)

  def __call__(self, inputs):
    ys, _ = self.rnn(inputs)
    return self.head(ys[:, -1])[:, 0]


@nnx.jit
def train_step(model, optimizer, inputs, targets):
  def loss_fn(model):
    return jnp.mean((model(inputs) - targets) ** 2)
  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


def train(config) -> list[tuple[int, float]]:
  """Returns the loss curve [(step, mean loss since the last entry)]."""
  model = Regressor(config, nnx.Rngs(config.seed))
  optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)
  rng = np.random.default_rng(config.seed)
  curve, window = [], []
  for step in range(1, config.steps + 1):
    batch = adding_problem(rng, config.batch_size, config.length)
    window.append(float(train_step(model, optimizer, batch["inputs"], batch["targets"])))
    if step % config.log_every == 0:
      curve.append((step, float(np.mean(window))))
      window = []
  return curve


def main(config) -> None:
  print(f"devices: {jax.devices()}\nconfig:\n{config}")
  print(f"adding problem, length {config.length}: baseline MSE {adding_baseline():.3f}")
  curve = train(config)
  worst = max(loss for _, loss in curve)
  for step, loss in curve:
    print(f"step {step:5d}  mse {loss:.4f}  {'#' * max(1, round(40 * loss / worst))}")


if __name__ == "__main__":
  # Defined here rather than at import: config_flags imports this file to call get_config.
  _CONFIG = config_flags.DEFINE_config_file("config", __file__)
  app.run(lambda argv: main(_CONFIG.value))
