"""What a sweep shows while it runs: a line per finished trial, and for the workers of one
launcher (launch.local) one display in the launcher, read from the sweep's studies: a tqdm bar of
the trials done (on a terminal) with the finished trials' lines printed above it. Its workers
print nothing themselves (`run_worker(show_progress=False)`), so several never draw over each
other."""
import sys

import optuna

from launch import study as studies


def trial_line(variant: str, number: int, result: dict) -> str:
  """One line for a finished trial: its status and validation and test metrics, or where it
  diverged. `result`: train_and_evaluate's, or the user_attrs of the trial it was recorded on."""
  head = f"{variant} trial {number} {result.get('status', 'failed')}"
  if result.get("status", "failed") == "failed":
    return f"{head}: {result.get('error', 'interrupted').splitlines()[0]}"
  if result["status"] == "diverged":
    return f"{head} at step {result['diverged_step']} (epoch {result['epochs']})"
  values = ", ".join(f"{key} {value:.4f}" for split in ("valid_", "test_")
                     for key, value in result.items() if key.startswith(split))
  return f"{head}: {values} (best epoch {result['best_epoch']} of {result['epochs']})"


class SweepDisplay:
  """The bar of a sweep's trials done (`studies.is_done` with `max_retries`) out of `total`, and
  a line for each trial done after the display started; `update` reads the studies again."""

  def __init__(self, variant_studies: list[optuna.Study], total: int, description: str,
               max_retries: int):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    self._studies, self._max_retries = variant_studies, max_retries
    self._shown = {(study.study_name, trial.number) for study, trial in self._done()}
    self.bar = tqdm(total=total, initial=len(self._shown), desc=description,
                    disable=not sys.stderr.isatty())

  def _done(self):
    return [(study, trial) for study in self._studies
            for trial in study.get_trials(deepcopy=False) if studies.is_done(trial, self._max_retries)]

  def update(self) -> None:
    for study, trial in self._done():
      if (study.study_name, trial.number) not in self._shown:
        self._shown.add((study.study_name, trial.number))
        variant = study.study_name.partition("/")[2]
        self.bar.write(trial_line(variant, trial.number, trial.user_attrs),
                       file=sys.stderr)
        self.bar.update(1)

  def __enter__(self) -> "SweepDisplay":
    return self

  def __exit__(self, *exc_info) -> None:
    self.bar.close()
