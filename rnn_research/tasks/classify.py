"""Many-to-one classification (`config.task = "classify"`): an encoder reads a whole text and a
head classifies it; reported as NLL per sequence and accuracy.

config.data:
  "abc_tunes": a folk tune's key signature or metre (task_options.label "key" or "meter") from
    its notes, with the `K:`/`M:` fields removed (`data.abc_headers`).
  "imdb_reviews": the sentiment of a film review, read only from a copy already prepared in the
    TFDS data dir (never downloaded; a missing copy fails naming the data dir). Every tenth
    training review is held out for validation.
config.task_options (OPTIONS holds the defaults):
  label: "key" or "meter" (abc_tunes).
  num_classes: the most frequent labels of the training split are the classes; tunes with
    other labels are left out (abc_tunes).
  text: "notes" = the tune's body only; "header" = also its other header lines
    (title, origin, rhythm, ...), which can give the answer away (abc_tunes).
  max_length: characters read from the start of each text.
  max_train: use at most this many training examples (0 = all).
The baseline NLL is the test cross-entropy of the training split's label frequencies.
"""
import collections
import math

from rnn_research.models.encoder import CONFIG_KEYS as MODEL_KEYS
from rnn_research.models.labelling import SequenceClassifier, correct, label_loss
from rnn_research.tasks import register
from rnn_research.tasks.base import Task
from rnn_research.tasks.base import eval_batches

DATASETS = ("abc_tunes", "imdb_reviews")
LABELS = ("key", "meter")
TEXTS = ("notes", "header")
OPTIONS = dict(label="key", num_classes=6, text="notes", max_length=256, max_train=0)
IMDB_CLASSES = ("negative", "positive")


def tune_examples(source, label: str, text: str, max_length: int) -> list[dict]:
  """{"text", "label"} of every tune of `source`, K:/M: removed, labels normalised."""
  from rnn_research.data import abc_headers  # pylint: disable=g-import-not-at-top
  normalize = abc_headers.normalize_key if label == "key" else abc_headers.normalize_meter
  out = []
  for i in range(len(source)):
    tune = source[i]
    body = (abc_headers.notes(tune["text"]) if text == "notes"
            else abc_headers.remove_fields(tune["text"])).strip()
    if body:
      out.append({"text": body[:max_length], "label": normalize(tune[label])})
  return out


def most_frequent(examples: list[dict], count: int) -> list[str]:
  """The `count` most frequent labels (ties broken by name)."""
  counts = collections.Counter(e["label"] for e in examples)
  return sorted(counts, key=lambda name: (-counts[name], name))[:count]


def frequency_nll(train: list[dict], test: list[dict]) -> float:
  """Cross-entropy (nats per sequence) on `test` of the label frequencies of `train`."""
  counts = collections.Counter(e["label"] for e in train)
  return -sum(math.log(counts[e["label"]] / len(train)) for e in test) / len(test)


def classification_task(splits: dict, vocab, classes, config) -> Task:
  """The Task of lists of {"text", "label"} examples per split (labels among `classes`)."""
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  classes = list(classes)
  for split, examples in splits.items():
    if not examples:
      raise ValueError(f"the {split} split has no examples of the classes {classes}")
  transform = data.char_classify(vocab, {name: i for i, name in enumerate(classes)}, "label")

  def make_model(model_config, rngs):
    return SequenceClassifier(model_config, len(vocab), len(classes), embed=True, rngs=rngs)

  def loss(model, batch):
    return label_loss(model(batch["inputs"], batch["lengths"]), batch["targets"])

  def metrics(model, batch):
    return {"accuracy": correct(model(batch["inputs"], batch["lengths"]), batch["targets"])}

  return Task(splits["train"], eval_batches(splits, config, transform), transform, make_model,
              loss, metrics, baseline_nll=frequency_nll(splits["train"], splits["test"]))


def _abc_splits(config, options):
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  label, text = options.label, options.text
  if label not in LABELS:
    raise ValueError(f"task_options.label must be one of {LABELS}, got {label!r}")
  if text not in TEXTS:
    raise ValueError(f"task_options.text must be one of {TEXTS}, got {text!r}")
  data_dir = config.data_dir or None
  splits = {split: tune_examples(data.load("abc_tunes", split, data_dir=data_dir), label, text,
                                 options.max_length)
            for split in ("train", "validation", "test")}
  return splits, data.load_vocabulary("abc_tunes", data_dir=data_dir), None


def _imdb_splits(config, options):
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  max_length = options.max_length
  data_dir = config.data_dir or None
  read = lambda source, keep: [{"text": source[i]["text"][:max_length],
                                "label": IMDB_CLASSES[int(source[i]["label"])]}
                               for i in range(len(source)) if keep(i)]
  train = data.load("imdb_reviews", "train", data_dir=data_dir)
  splits = {"train": read(train, lambda i: i % 10), "validation": read(train, lambda i: not i % 10),
            "test": read(data.load("imdb_reviews", "test", data_dir=data_dir), lambda i: True)}
  vocab = data.Vocabulary.from_texts(e["text"] for e in splits["train"])
  return splits, vocab, list(IMDB_CLASSES)


@register("classify", options=OPTIONS, model=MODEL_KEYS, data=DATASETS)
def classify_task(config) -> Task:
  options = config.task_options
  read = _abc_splits if config.data == "abc_tunes" else _imdb_splits
  splits, vocab, classes = read(config, options)
  if options.max_train:
    splits["train"] = splits["train"][:options.max_train]
  classes = classes or most_frequent(splits["train"], options.num_classes)
  splits = {split: [e for e in examples if e["label"] in classes]
            for split, examples in splits.items()}
  return classification_task(splits, vocab, classes, config)
