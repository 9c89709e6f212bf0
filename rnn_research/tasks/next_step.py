"""Next-step prediction on piano rolls (88 sigmoids, NLL in nats per frame summed over keys, each
sequence's first frame unscored) or characters (softmax, NLL per character, also reported in bits
per character). `config.data` names the dataset.

config.task_options (OPTIONS holds the defaults):
  max_length: cut every sequence of every split to its first max_length steps (0 = whole
    sequences); the metrics are then those of the sequences' beginnings (the piano rolls'
    baseline stays that of whole sequences).
"""
from rnn_research import metrics
from rnn_research.models import NextStepModel
from rnn_research.tasks import register
from rnn_research.tasks.base import Task, eval_batches

OPTIONS = dict(max_length=0)
# The model keys of the head (NextStepModel) besides the backbone's.
MODEL = dict(output_dropout=0.0)  # dropout on the backbone's outputs before the read-out
# config.data -> (TFDS name, kind). The Boulanger-Lewandowski sets are built from the user's
# .pickle/.mat file (config.data_path) the first time, each under its own name.
DATASETS = {"music21": ("jsb_chorales/music21", "piano_roll"),
            "jsb_standard": ("jsb_chorales/standard", "piano_roll"),
            "standard": ("jsb_chorales/standard", "piano_roll"),  # the former name
            "nottingham": ("nottingham", "piano_roll"),
            "muse_data": ("muse_data", "piano_roll"),
            "piano_midi_de": ("piano_midi_de", "piano_roll"),
            "abc_tunes": ("abc_tunes", "characters")}


def piano_roll_loss(model, batch):
  logits = model(batch["inputs"], batch["lengths"])
  return metrics.piano_roll_nll(logits, batch["targets"], metrics.scored_frames(batch["mask"]))


def character_loss(model, batch):
  logits = model(batch["inputs"], batch["lengths"])
  return metrics.character_nll(logits, batch["targets"], batch["mask"])


def max_length(config) -> int:
  """The trial config's task_options.max_length (0 = whole sequences), checked."""
  value = config.task_options.max_length
  if not isinstance(value, int) or isinstance(value, bool) or value < 0:
    raise ValueError(f"task_options.max_length must be an int >= 0 (0 = whole sequences), got "
                     f"{value!r}")
  return value


@register("next_step", options=OPTIONS, model=MODEL, data=DATASETS)
def next_step_task(config) -> Task:
  from rnn_research import data  # pylint: disable=g-import-not-at-top
  name, kind = DATASETS[config.data]
  cut = max_length(config)
  options = dict(data_dir=config.data_dir or None, path=config.data_path or None)
  sources = {split: data.load(name, split, **options) for split in ("train", "validation", "test")}
  if kind == "piano_roll":
    transform, loss, units, embed = data.piano_roll_next_step, piano_roll_loss, 88, False
    baseline = float(sources["test"].info.metadata["statistics"]["frequency_nll_test"])
  else:
    vocab = data.load_vocabulary(name, data_dir=options["data_dir"])
    transform, loss, units, embed = data.char_next_step(vocab), character_loss, len(vocab), True
    baseline = None
  if cut:
    transform = data.cropped(transform, cut)

  def make_model(model_config, rngs):
    return NextStepModel(model_config, units, units, embed=embed,
                         output_dropout=model_config.output_dropout, rngs=rngs)

  return Task(sources["train"], eval_batches(sources, config, transform), transform, make_model,
              loss, baseline_nll=baseline, bits_per_character=kind == "characters")
