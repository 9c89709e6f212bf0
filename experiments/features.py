"""The RNN as a feature extractor: the final state of the encoder of a trained many-to-one
classifier, fed to scikit-learn's logistic regression, against the end-to-end classifier on the
same task (a folk tune's metre from its notes), and against the same regression on the features
of an untrained (random) encoder.

    python -m experiments.features --config=experiments/features.py:smoke  # ~1 min, 2 CPU cores
    python -m experiments.features                     # all tunes; est. 30 min

The classifier is trained as in `experiments.classify` (sweeps/features[-smoke]/<variant>);
the logistic regression is fitted on the training tunes' summary vectors and scored on the test
tunes. Smoke (measured): end-to-end 0.35, logistic regression on the trained encoder 0.40 and
on the random encoder 0.38 (the smoke encoder has hardly learnt). Expected at full size: the
trained encoder's features near the end-to-end accuracy (its head is a logistic regression on
them), the random encoder's clearly worse.
"""
import pathlib
import sys

import ml_collections
from flax import nnx

from experiments import classify, runner

METRICS = ("test_accuracy", "logreg_trained_accuracy", "logreg_random_accuracy", "test_nll")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: None or "smoke"; the trial is classify.py's."""
  config = classify.get_config(arg).to_dict()
  config.update(name="features" + ("-smoke" if arg == "smoke" else ""),
                variants=("meter-bilstm",), c=1.0)
  config = ml_collections.ConfigDict(config)
  config.lock()
  return config


variant_config = classify.variant_config


def main(config, workdir: str) -> dict:
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.models import features  # pylint: disable=g-import-not-at-top
  from rnn_research.tasks import make_task  # pylint: disable=g-import-not-at-top
  results = runner.run(sys.modules[__name__], config, workdir, table=False)
  for name in config.variants:
    trial = variant_config(config, name)
    task = make_task(trial)
    train_batches = list(data.Loader(task.train, trial.eval_batch_size,
                                     transform=task.transform, shuffle=False, num_epochs=1,
                                     pad_multiple=trial.pad_multiple))
    models = {"trained": runner.best_model(task, trial, pathlib.Path(workdir) / name),
              "random": task.make_model(trial.model, nnx.Rngs(trial.seed))}
    for kind, model in models.items():
      classifier = features.fit_logistic_regression(*features.encode(model, train_batches),
                                                    c=config.c)
      accuracy = classifier.score(*features.encode(model, task.eval_batches["test"]))
      results[name][f"logreg_{kind}_accuracy"] = float(accuracy)
  runner.print_table(results, METRICS)
  return results


if __name__ == "__main__":
  runner.entry_point(__name__, __file__)
