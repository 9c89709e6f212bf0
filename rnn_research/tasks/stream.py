"""Character language modelling on one long stream of folk tunes, trained with truncated BPTT
(`config.task = "stream"`; `models.streaming`, `layers.tbptt`): each example is a window of the
stream; within it the carry flows across chunks of k1 steps, the gradient reaches back k2 steps,
and the state restarts at every tune's `<start>`. Reported as NLL and bits per character.

config.data: "abc_tunes" (tunes concatenated as `<start> text <end>` in split order).
config.task_options (OPTIONS holds the defaults):
  window: steps per example; k1, k2: TBPTT's steps per update and steps the gradient flows back
    (k2 None: k1; k1 = window is full BPTT over the window).
  max_train: use at most this many training windows (0 = all).
Evaluation reads the same windows (the forward pass does not depend on k1, k2).
"""
from rnn_research.models import NextStepModel
from rnn_research.models.streaming import check_recurrent, tbptt_loss
from rnn_research.tasks import register
from rnn_research.tasks.base import Task
from rnn_research.tasks.base import eval_batches

OPTIONS = dict(window=256, k1=32, k2=None, max_train=0)


def stream_task(splits: dict, vocab_size: int, config) -> Task:
  """The Task of `data.streams.StreamSource` windows per split."""
  k1 = config.task_options.k1
  k2 = config.task_options.k2 or k1

  def make_model(model_config, rngs):
    model = NextStepModel(model_config, vocab_size, vocab_size, embed=True, rngs=rngs)
    check_recurrent(model)
    return model

  def loss(model, batch):
    return tbptt_loss(model, batch["inputs"], batch["resets"], batch["targets"], batch["mask"],
                      k1=k1, k2=k2)

  return Task(splits["train"], eval_batches(splits, config, dict), dict, make_model, loss,
              bits_per_character=True)


@register("stream", options=OPTIONS, data=("abc_tunes",))
def stream_builder(config) -> Task:
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  from rnn_research.data.streams import StreamSource  # pylint: disable=g-import-not-at-top
  options = config.task_options
  data_dir = config.data_dir or None
  vocab = data.load_vocabulary("abc_tunes", data_dir=data_dir)
  splits = {}
  for split in ("train", "validation", "test"):
    source = data.load("abc_tunes", split, data_dir=data_dir)
    documents = [vocab.encode(source[i]["text"], add_start=True, add_end=True)
                 for i in range(len(source))]
    splits[split] = StreamSource(documents, options.window)
  if options.max_train:
    train = splits["train"]
    splits["train"] = [train[i] for i in range(min(options.max_train, len(train)))]
  return stream_task(splits, len(vocab), config)
