"""Watching a sweep live: each trial's TensorBoard events hold its metrics.jsonl and its
hyperparameters, each epoch's validation NLL reaches its Optuna trial (so optuna-dashboard
serves the curves over HTTP), and the workers of one launcher print nothing of their own while
the launcher shows one bar and a line per finished trial."""
import contextlib
import io
import json
import sys
import threading
import urllib.request
from wsgiref import simple_server

import numpy as np
import optuna
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from experiments import odyssey
from launch import progress, sweep, worker
from rnn_research import event_files, train


def small_config(fake_chorales, **overrides):
  config = train.default_config()
  config.data, (config.data_path, config.data_dir) = "standard", fake_chorales
  config.model.hidden_size = 8
  config.update(batch_size=2, eval_batch_size=8, max_epochs=2, patience=2, optimizer="adam",
                learning_rate=0.02, pad_multiple=16)
  config.update(overrides)
  return config


def read_events(workdir) -> event_accumulator.EventAccumulator:
  events = event_accumulator.EventAccumulator(str(workdir / event_files.SUBDIR),
                                              size_guidance={event_accumulator.SCALARS: 0})
  events.Reload()
  return events


def test_tensorboard_events_hold_the_metrics_the_result_and_the_hparams(fake_chorales,
                                                                        tmp_path):
  config = small_config(fake_chorales)
  result = train.train_and_evaluate(config, tmp_path)
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  events = read_events(tmp_path)
  scalars = set(lines[0]) - {"epoch", "step"}
  assert scalars >= {"train_loss", "valid_nll", "learning_rate"}
  for key in scalars:  # float32 in the event file
    assert [(e.step, e.value) for e in events.Scalars(key)] == [
        (line["epoch"], float(np.float32(line[key]))) for line in lines]
  assert lines[-1]["learning_rate"] == pytest.approx(config.learning_rate)
  for key in ("valid_nll", "test_nll"):
    [event] = events.Scalars(event_files.RESULT_PREFIX + key)
    assert (event.step, event.value) == (result["epochs"], float(np.float32(result[key])))

  plugin = {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
            for tag, content in events.PluginTagToContent("hparams").items()}
  hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
  assert hparams["learning_rate"].number_value == config.learning_rate
  assert hparams["model.hidden_size"].number_value == 8
  assert hparams["optimizer"].string_value == "adam"
  columns = [m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos]
  assert columns == ["result/valid_nll", "result/test_nll"]
  assert plugin["_hparams_/session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS


def test_a_finished_workdir_tells_on_epoch_its_epochs_and_tensorboard_can_be_off(
    fake_chorales, tmp_path):
  config = small_config(fake_chorales, tensorboard=False)
  told = []
  train.train_pack([config], [tmp_path], on_epoch=lambda k, line: told.append((k, line)))
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert told == [(0, line) for line in lines] and len(lines) == 2
  assert not (tmp_path / event_files.SUBDIR).exists()
  retold = []  # a retried trial whose workdir had finished gets its epochs too
  train.train_pack([config], [tmp_path], on_epoch=lambda k, line: retold.append((k, line)))
  assert retold == told


def test_without_tensorboardx_the_trial_says_what_to_do_before_writing(fake_chorales, tmp_path,
                                                                       monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
  with pytest.raises(ImportError, match=r"needs tensorboardX: pip install .*tensorboard=False"):
    train.train_and_evaluate(small_config(fake_chorales), tmp_path / "trial")
  assert not (tmp_path / "trial").exists()


def test_flat_hparams():
  assert event_files.flat_hparams({"a": 1, "m": {"b": "x", "c": [1, 2], "d": None}, "e": True}) == {
      "a": 1, "m.b": "x", "m.c": "[1, 2]", "m.d": "null", "e": True}


@pytest.fixture(scope="module")
def finished_sweep(fake_chorales, tmp_path_factory):
  """A sweep of two trials of V trained as one pack for 2 epochs, by a worker that shows no
  progress: (sweep dir, storage URL, what the worker printed)."""
  config = odyssey.get_config("smoke")
  config.variants, config.trials_per_variant, config.pack_size = ("V",), 2, 2
  config.data, (config.data_path, config.data_dir) = "standard", fake_chorales
  config.trial.max_epochs = 2
  sweep_dir = tmp_path_factory.mktemp("sweep")
  prepared = sweep.prepare(sweep.check(config, "experiments/odyssey.py:smoke", str(sweep_dir), None,
                                       False))
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
    assert worker.run_worker(str(sweep_dir), prepared.url, prepared.study_file, config.to_dict(),
                             show_progress=False) == 2
  return sweep_dir, prepared.url, printed.getvalue()


def _valid_nll_per_epoch(sweep_dir, trial) -> dict:
  lines = (sweep_dir / trial.user_attrs["workdir"] / "metrics.jsonl").read_text().splitlines()
  return {line["epoch"]: line["valid_nll"] for line in map(json.loads, lines)}


def test_each_epoch_is_reported_to_its_optuna_trial(finished_sweep):
  sweep_dir, url, _ = finished_sweep
  trials = optuna.load_study(study_name="odyssey/V", storage=url).get_trials()
  assert len(trials) == 2
  for trial in trials:
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.intermediate_values == _valid_nll_per_epoch(sweep_dir, trial)
    assert len(trial.intermediate_values) == 2


def test_a_worker_without_progress_prints_no_bar_and_no_lines(finished_sweep):
  _, _, printed = finished_sweep
  assert "epoch" not in printed and "trial" not in printed and "\r" not in printed


def test_optuna_dashboard_serves_the_study_and_its_curves(finished_sweep):
  from optuna_dashboard import wsgi  # pylint: disable=g-import-not-at-top
  sweep_dir, url, _ = finished_sweep
  server = simple_server.make_server("127.0.0.1", 0, wsgi(url),
                                     handler_class=_QuietHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    address = f"http://127.0.0.1:{server.server_port}"
    with urllib.request.urlopen(f"{address}/api/studies", timeout=60) as answer:
      listed = json.load(answer)["study_summaries"]
    [study] = [s for s in listed if s["study_name"] == "odyssey/V"]
    with urllib.request.urlopen(f"{address}/api/studies/{study['study_id']}",
                                timeout=60) as answer:
      served = json.load(answer)["trials"]
  finally:
    server.shutdown()
    server.server_close()
  stored = optuna.load_study(study_name="odyssey/V", storage=url).get_trials()
  assert len(served) == len(stored) == 2
  for trial, record in zip(served, stored):
    curve = {point["step"]: point["value"] for point in trial["intermediate_values"]}
    assert curve == _valid_nll_per_epoch(sweep_dir, record)


class _QuietHandler(simple_server.WSGIRequestHandler):
  def log_message(self, *args):  # not a line per request in the test output
    pass


def test_the_sweep_display_prints_each_trial_finished_after_it_started(capsys):
  study = optuna.create_study(study_name="s/V")
  attrs = {"variant": "V", "status": "completed", "test_nll": 8.75, "valid_nll": 8.5,
           "best_epoch": 3, "epochs": 5}  # the order of a stored trial's: by name
  study.add_trial(optuna.trial.create_trial(value=8.5, user_attrs=attrs))
  with progress.SweepDisplay([study], total=4, description="sweep", max_retries=3) as display:
    assert display.bar.disable  # no terminal here: no bar, only the lines
    study.add_trial(optuna.trial.create_trial(value=9.0, user_attrs={**attrs, "valid_nll": 9.0}))
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL,
        user_attrs={"variant": "V", "status": "diverged", "diverged_step": 17, "epochs": 2}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # interrupted
    display.update()
    display.update()
  assert capsys.readouterr().err.splitlines() == [
      "V trial 1 completed: valid_nll 9.0000, test_nll 8.7500 (best epoch 3 of 5)",
      "V trial 2 diverged at step 17 (epoch 2)"]
