"""The report of a sweep of any declared study: box plots, Welch t-tests against the declared
baseline, fANOVA, marginals, learning curves, and the sections a study adds.

`write_report(sweep_dir)` (or `python -m rnn_research.analysis.report --sweep_dir=DIR`) reads the
sweep's declaration (sweep.json), Optuna studies and trial workdirs and writes
DIR/report/report.md with its figures.
Needs optuna, scipy, matplotlib and (for fANOVA) scikit-learn, imported only from this package.
"""


def write_report(sweep_dir: str, storage: str | None = None) -> str:
  """Writes DIR/report/ and returns the path of report.md; see report.write_report."""
  # Imported here so that `python -m rnn_research.analysis.report` runs the module only once.
  from rnn_research.analysis import report  # pylint: disable=g-import-not-at-top

  return report.write_report(sweep_dir, storage)
