"""Sequence data: TFDS datasets (array_record, no TensorFlow), synthetic tasks and batching.

Public API:
  load(name, split, data_dir=None, path=None) -> Source    random access to one split
  dataset_names()                                           the names `load` accepts
  load_vocabulary("abc_tunes", data_dir) -> Vocabulary      saved with the dataset
  Loader(source, batch_size, transform=..., seed=...)       padded batches, resumable
  pad_batch(examples), epoch_batches(...)                   the pieces Loader is made of
  example_lengths(source, transform), fit_pad_lengths(lengths, count)
                                                            padded lengths that pad least
  piano_roll_next_step, char_next_step, char_classify       example -> inputs/targets
  cropped(transform, max_length)                            ... cut to the first steps
  SyntheticSource("adding" | "temporal_order" | "copy", length, size, seed)
  adding_problem, temporal_order_problem, copy_problem      batch generators, and baselines
  read_polyphonic_file(path), frequency_model_nll, roll_statistics

Batches are dicts: `inputs [batch, time, features]` (or `[batch, time]` ids), `targets`,
`lengths [batch]`, `mask [batch, time]`. Example, the built-in JSB Chorales (no download):

  from rnn_research import data
  train = data.load("jsb_chorales/music21", "train", data_dir="/tmp/tfds")
  batches = data.Loader(train, 16, transform=data.piano_roll_next_step, seed=0)
  batch = next(batches); state = batches.get_state()   # save `state` with the checkpoint

`python -m rnn_research.data NAME [--data_dir D] [--path P]` builds a dataset and prints its
statistics. TensorFlow Datasets and music21 are imported only when a dataset is loaded.
"""

from rnn_research.data.batching import (Loader, epoch_batches, example_lengths, fit_pad_lengths,
                                        pad_batch)
from rnn_research.data.loading import Source, builder, dataset_names, load, load_vocabulary
from rnn_research.data.piano_roll import (
    frequency_model_nll,
    read_polyphonic_file,
    roll_statistics,
    uniform_nll,
)
from rnn_research.data.synthetic import (
    SyntheticSource,
    adding_baseline,
    adding_problem,
    copy_baseline,
    copy_problem,
    temporal_order_baseline,
    temporal_order_problem,
)
from rnn_research.data.transforms import (
    char_classify,
    char_next_step,
    cropped,
    piano_roll_next_step,
)
from rnn_research.data.vocabulary import Vocabulary
