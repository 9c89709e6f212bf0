"""Every task shape trains: on tiny data made here, a few dozen Adam steps of the task's own loss
(one compiled step per test) cut it well down; the tasks' metrics count what they claim; one
task runs through `train_and_evaluate` and reports its metrics per split."""
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from rnn_research import train
from rnn_research.data import pad_batch, strings
from rnn_research.data.vocabulary import Vocabulary
from rnn_research.tasks import make_task
from rnn_research.tasks.classify import classification_task
from rnn_research.tasks.conditional import conditional_task, generate_tunes
from rnn_research.data.streams import StreamSource
from rnn_research.tasks.seq2seq import seq2seq_task
from rnn_research.tasks.stream import stream_task
from rnn_research.tasks.tag import tagging_task


def small_config(task="next_step", **model):
  config = train.default_config(task)
  config.update(eval_batch_size=4, pad_multiple=4)
  config.model.update(backbone="gru", hidden_size=12, num_layers=1, **model)
  return config


def fit(task, config, examples, steps=40, learning_rate=0.05):
  """Adam on one fixed batch of `examples`; returns (losses, trained model, batch)."""
  batch = pad_batch([task.transform(e) for e in examples])
  graphdef, params, other = nnx.split(task.make_model(config.model, nnx.Rngs(0)), nnx.Param, ...)
  tx = optax.adam(learning_rate)

  @jax.jit
  def step(params, opt_state):
    def loss(params):
      total, count = task.loss(nnx.merge(graphdef, params, other), batch)
      return total / count
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  opt_state, losses = tx.init(params), []
  for _ in range(steps):
    params, opt_state, value = step(params, opt_state)
    losses.append(float(value))
  return losses, nnx.merge(graphdef, params, other), batch


def test_classification_learns_which_letters_a_text_uses(rng):
  letters = {"x": "abc", "y": "def"}
  make = lambda n: [{"text": "".join(rng.choice(list(letters[l]), rng.integers(3, 9))), "label": l}
                    for l in rng.choice(list(letters), n)]
  splits = {"train": make(8), "validation": make(4), "test": make(4)}
  vocab = Vocabulary.from_texts("abcdef")
  config = small_config()
  task = classification_task(splits, vocab, ["x", "y"], config)
  losses, model, batch = fit(task, config, splits["train"])
  assert losses[-1] < 0.2 * losses[0]
  hits, count = nnx.jit(task.metrics)(model, batch)["accuracy"]
  assert int(count) == 8 and int(hits) == 8
  assert task.baseline_nll > 0


def test_tagging_learns_a_bass_an_octave_below(rng):
  """Chorales whose bass doubles the soprano an octave lower: a per-step mapping."""
  def chorale(length):
    roll = np.zeros((length, 88), np.uint8)
    soprano = rng.integers(40, 46, size=length)
    roll[np.arange(length), soprano] = roll[np.arange(length), soprano - 12] = 1
    roll[rng.integers(length)] = 0  # a rest
    return {"roll": roll}

  splits = {split: [chorale(int(n)) for n in rng.integers(5, 12, size=4)]
            for split in ("train", "validation", "test")}
  config = small_config()
  task = tagging_task(splits, config)
  losses, model, batch = fit(task, config, splits["train"], steps=60)
  assert losses[-1] < 0.2 * losses[0]
  hits, count = nnx.jit(task.metrics)(model, batch)["accuracy"]
  assert int(count) == batch["mask"].sum() and int(hits) >= 0.9 * int(count)


def test_seq2seq_learns_to_reverse_and_decodes_it():
  source = strings.StringSource("reverse", 8, seed=3, min_length=2, max_length=4)
  examples = [source[i] for i in range(8)]
  config = small_config(attention="luong", decoder_cell="gru")
  task = seq2seq_task({"train": examples, "validation": examples[:4], "test": examples[:4]},
                      strings.VOCABULARY, config)
  losses, model, batch = fit(task, config, examples, steps=50)
  assert losses[-1] < 0.1 * losses[0]
  result = {k: (int(a), int(b)) for k, (a, b) in nnx.jit(task.metrics)(model, batch).items()}
  assert result["token_accuracy"][1] == int((batch["targets"] != 0).sum())
  assert result["sequence_accuracy"][1] == 8 and result["sequence_accuracy"][0] >= 6


def test_conditional_generator_writes_the_tune_of_its_key():
  tunes = {"G": "GABc|", "D": "DEFA|"}
  examples = [{"text": tunes[k], "key": k, "meter": "4/4"} for k in "GDGD"]
  vocab = Vocabulary.from_texts(e["text"] for e in examples)
  config = small_config()
  task = conditional_task({"train": examples, "validation": examples, "test": examples}, vocab,
                          ["G", "D"], ["4/4"], config)
  losses, model, _ = fit(task, config, examples, steps=60)
  assert losses[-1] < 0.1 * losses[0]
  abc = generate_tunes(model, vocab, ["G", "D"], ["4/4"], [("D", "4/4"), ("G", "4/4")],
                       jax.random.key(0), num_steps=12, temperature=0.0)
  assert abc[0].endswith("K:D\nDEFA|\n") and abc[1].endswith("K:G\nGABc|\n")
  assert "L:1/8" in abc[0] and "M:4/4" in abc[0]


def test_stream_language_model_learns_with_truncated_bptt(rng):
  documents = [np.array([1] + [3, 4, 5] * int(n) + [2]) for n in rng.integers(1, 4, size=12)]
  source = StreamSource(documents, window=12)
  config = small_config("stream")
  config.task_options.k1 = 4
  task = stream_task({"train": source, "validation": source, "test": source}, 6, config)
  losses, _, _ = fit(task, config, [source[i] for i in range(4)])
  assert losses[-1] < 0.3 * losses[0]


def test_train_and_evaluate_reports_seq2seq_metrics(tmp_path):
  config = small_config("seq2seq", attention="none", decoder_cell="gru")
  config.update(data="add", optimizer="adam", learning_rate=0.01, batch_size=8,
                max_epochs=1, patience=1, pad_multiple=8)
  config.task_options.update(train_size=8, eval_size=4, max_length=2)
  result = train.train_and_evaluate(config, tmp_path)
  assert result["status"] == "completed"
  for name in ("nll", "token_accuracy", "sequence_accuracy"):
    for split in ("valid", "test"):
      assert 0 <= result[f"{split}_{name}"] < (np.inf if name == "nll" else 1.0 + 1e-9)


@pytest.mark.parametrize("task,data,message", [
    ("classify", "music21", "data must be one of"),
    ("seq2seq", "abc_tunes", "data must be one of"),
    ("tag", "abc_tunes", "data must be one of"),
    ("conditional", "music21", "data must be one of"),
])
def test_bad_task_configs(task, data, message):
  config = small_config(task)
  config.data = data
  with pytest.raises(ValueError, match=message):
    make_task(config)


def test_missing_imdb_names_the_data_dir(tmp_path):
  config = small_config("classify")
  config.update(data="imdb_reviews", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    make_task(config)
