"""The RNN as a feature extractor: the summary vector of a trained encoder (what a classifier's
head reads) as the input of a classical classifier (scikit-learn's logistic regression).

    x_train, y_train = encode(model, train_batches)     # [N, E] features, [N] labels
    classifier = fit_logistic_regression(x_train, y_train)
    accuracy = classifier.score(*encode(model, test_batches))
"""
import numpy as np
from flax import nnx


@nnx.jit
def _features(model, inputs, lengths):
  return model.features(inputs, lengths)


def encode(model, batches, label_key: str = "targets") -> tuple[np.ndarray, np.ndarray]:
  """(features [N, E] float64, labels [N]) of every row of `batches` (padded dict batches with
  "inputs", "lengths" and `label_key`); `model` has `features(inputs, lengths) -> [B, E]`
  (e.g. `SequenceClassifier`)."""
  xs, ys = [], []
  for batch in batches:
    xs.append(np.asarray(_features(model, batch["inputs"], batch["lengths"]), np.float64))
    ys.append(np.asarray(batch[label_key]))
  if not xs:
    raise ValueError("batches must not be empty")
  return np.concatenate(xs), np.concatenate(ys)


def fit_logistic_regression(features, labels, *, c: float = 1.0, max_iter: int = 2000):
  """A scikit-learn pipeline (standardise, then multinomial logistic regression with inverse
  L2 strength `c`) fitted on features [N, E] and labels [N]."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  features, labels = np.asarray(features), np.asarray(labels)
  if features.ndim != 2 or labels.shape != features.shape[:1]:
    raise ValueError(f"features must be [N, E] and labels [N], got shapes {features.shape} "
                     f"and {labels.shape}")
  classifier = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
  return classifier.fit(features, labels)
