"""The measuring parts of the experiments: dL/dh_t of the gradient-flow experiment against
NumPy backpropagation, and the feature extractor's vectors and logistic regression."""
import ml_collections
import numpy as np
from flax import nnx

from experiments import gradient_flow
from rnn_research.models.labelling import SequenceClassifier
from rnn_research.models.features import encode, fit_logistic_regression


def test_hidden_gradients_match_numpy_backpropagation(rng):
  """Elman RNN, loss = mean (w·h_T + c - y)^2: dL/dh_T = 2 (pred - y) w / B and
  dL/dh_(t-1) = (dL/dh_t ⊙ (1 - h_t^2)) R^T, in float64 step by step."""
  reader = gradient_flow.Reader("elman", 5, rngs=nnx.Rngs(0))
  xs, targets = rng.normal(size=(3, 7, 2)), rng.normal(size=3)
  norms = np.asarray(gradient_flow.hidden_gradient_norms(reader, xs, targets))
  p = {k: np.asarray(v, np.float64) for k, v in reader.cell.params.items()}
  w = np.asarray(reader.head.kernel[...], np.float64)[:, 0]
  c = float(reader.head.bias[...][0])
  h, hs = np.zeros((3, 5)), []
  for t in range(7):
    h = np.tanh(xs[:, t] @ p["W"] + p["b"] + h @ p["R"])
    hs.append(h)
  grad = (2 * (hs[-1] @ w + c - targets) / 3)[:, None] * w[None]
  want = [grad]
  for t in range(6, 0, -1):
    grad = (grad * (1 - hs[t] ** 2)) @ p["R"].T
    want.insert(0, grad)
  want = np.linalg.norm(np.stack(want), axis=-1).mean(axis=1)
  np.testing.assert_allclose(norms, want, rtol=1e-5)


def test_features_are_the_classifier_summaries_and_feed_a_logistic_regression(rng):
  config = ml_collections.ConfigDict(dict(backbone="gru", hidden_size=4, num_layers=1))
  model = SequenceClassifier(config, 6, 2, embed=True, rngs=nnx.Rngs(0))
  batches = [{"inputs": rng.integers(1, 6, size=(4, 5)), "lengths": np.array([5, 2, 3, 5]),
              "targets": np.array([0, 1, 0, 1])} for _ in range(2)]
  features, labels = encode(model, batches)
  assert features.shape == (8, 4) and labels.tolist() == [0, 1, 0, 1] * 2
  np.testing.assert_allclose(features[4:], model.features(batches[1]["inputs"],
                                                          batches[1]["lengths"]), rtol=1e-6)
  separable = np.r_[rng.normal(-3, 1, size=(20, 2)), rng.normal(3, 1, size=(20, 2))]
  classes = np.r_[np.zeros(20), np.ones(20)]
  assert fit_logistic_regression(separable, classes).score(separable, classes) == 1.0
