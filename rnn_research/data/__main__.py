"""Builds a dataset into the data dir and prints its statistics.

  python -m rnn_research.data jsb_chorales/music21 --data_dir /tmp/tfds
  python -m rnn_research.data jsb_chorales/standard --path ../shared/data/JSB_Chorales.mat
"""

import argparse
import time

from rnn_research.data import loading, piano_roll


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("name", choices=loading.dataset_names(), metavar="NAME",
                      help=f"one of: {', '.join(loading.dataset_names())}")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--path", default=None, help="source .pickle/.mat file, where needed")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  b = loading.builder(args.name, data_dir=args.data_dir, path=args.path)
  print(f"{args.name}: ready in {b.data_dir} ({time.perf_counter() - start:.1f} s)")
  print(b.info.description)
  for split, info in b.info.splits.items():
    print(f"  {split}: {info.num_examples} examples")
  stats = b.info.metadata.get("statistics")
  if stats:
    print("statistics:", piano_roll.format_statistics(stats))
    print(f"uniform (0.5) model NLL: {piano_roll.uniform_nll():.3f} nats per frame")


if __name__ == "__main__":
  main()
