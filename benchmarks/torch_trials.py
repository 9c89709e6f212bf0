"""PyTorch side of benchmarks/sweep_throughput.py: Odyssey trials of the no-peephole LSTM
(`nn.LSTM` + `nn.Linear`, 88 sigmoids) trained as a PyTorch user would, run in its own Python
(one that has torch; the project's environment need not).

    python3.11 benchmarks/torch_trials.py SPEC.json DATA.npz OUT.json

DATA.npz holds each split's piano rolls concatenated (`{split}_rolls` [frames, 88]) with their
`{split}_offsets` [sequences + 1]. SPEC.json is one of:
  {"op": "train", "trials": [{"hidden_size", "learning_rate", "momentum", "input_noise",
   "seed"}], "max_epochs", "patience", "data_seed", "workers", "threads"}
      trains every trial (SGD with Nesterov momentum, an update per sequence in the order of
      `rnn_research.data.epoch_batches(seed=data_seed)`, Gaussian input noise, early stopping on
      validation NLL, test NLL at the best epoch) on `workers` processes of `threads` threads
      each, pulling trials from one queue; OUT gets {"seconds", "results", "torch"}.
  {"op": "check", "weights": NPZ, "trial": {...}, "updates": K}
      from the initial weights in NPZ (`lstm.*` as nn.LSTM's state dict, `head.weight`,
      `head.bias`; the two LSTM biases become one), without input noise: OUT gets {"losses":
      the first K updates' losses}.
"""
import json
import multiprocessing
import sys
import time

import numpy as np
import torch

SPLITS = ("train", "validation", "test")


def load_sequences(path: str) -> dict:
  """{split: [float32 tensor [T, 88]]}."""
  arrays = np.load(path)
  return {split: [torch.from_numpy(arrays[f"{split}_rolls"][a:b].astype(np.float32))
                  for a, b in zip(arrays[f"{split}_offsets"][:-1], arrays[f"{split}_offsets"][1:])]
          for split in SPLITS}


class Model(torch.nn.Module):
  """nn.LSTM with one bias, as the study's LSTM: its `bias_hh` is zero and frozen (a second,
  trained bias would add the same gradient twice, doubling the bias' learning rate)."""

  def __init__(self, hidden_size: int):
    super().__init__()
    self.lstm = torch.nn.LSTM(88, hidden_size, batch_first=True)
    self.head = torch.nn.Linear(hidden_size, 88)
    with torch.no_grad():
      self.lstm.bias_hh_l0.zero_()
    self.lstm.bias_hh_l0.requires_grad_(False)

  def loss(self, roll: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(NLL summed over keys and frames 1.., the frames): inputs are the roll shifted by one."""
    inputs = torch.cat([torch.zeros_like(roll[:1]), roll[:-1]])
    return self.loss_of_inputs(inputs, roll)

  def loss_of_inputs(self, inputs, roll):
    logits = self.head(self.lstm(inputs[None])[0])[0]
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits[1:], roll[1:],
                                                               reduction="sum")
    return nll, roll.shape[0] - 1


def evaluate(model: Model, sequences) -> float:
  with torch.no_grad():
    sums = [model.loss(roll) for roll in sequences]
  return float(sum(s for s, _ in sums) / sum(c for _, c in sums))


def train_trial(args) -> dict:
  trial, spec, sequences = args
  torch.manual_seed(trial["seed"])
  model = Model(trial["hidden_size"])
  optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                              lr=trial["learning_rate"], momentum=trial["momentum"], nesterov=True)
  best, best_epoch, test, bad = float("inf"), 0, None, 0
  train = sequences["train"]
  for epoch in range(spec["max_epochs"]):
    order = np.random.default_rng((spec["data_seed"], epoch)).permutation(len(train))
    for i in order:
      roll = train[i]
      inputs = torch.cat([torch.zeros_like(roll[:1]), roll[:-1]])
      inputs = inputs + trial["input_noise"] * torch.randn_like(inputs)
      nll, count = model.loss_of_inputs(inputs, roll)
      optimizer.zero_grad()
      (nll / count).backward()
      optimizer.step()
    valid = evaluate(model, sequences["validation"])
    if valid < best:
      best, best_epoch, bad = valid, epoch + 1, 0
      test = evaluate(model, sequences["test"])
    else:
      bad += 1
      if bad >= spec["patience"]:
        break
  return {"valid_nll": best, "test_nll": test, "best_epoch": best_epoch, "epochs": epoch + 1}


_SEQUENCES = None


def _init_worker(threads: int, data_path: str):
  global _SEQUENCES
  torch.set_num_threads(threads)
  _SEQUENCES = load_sequences(data_path)


def _train_in_worker(args):
  trial, spec = args
  return train_trial((trial, spec, _SEQUENCES))


def train(spec: dict, data_path: str) -> dict:
  start = time.perf_counter()
  context = multiprocessing.get_context("spawn")
  with context.Pool(spec["workers"], _init_worker, (spec["threads"], data_path)) as pool:
    results = pool.map(_train_in_worker, [(t, spec) for t in spec["trials"]], chunksize=1)
  return {"seconds": time.perf_counter() - start, "results": results}


def check(spec: dict, data_path: str) -> dict:
  """The first `updates` losses from the given initial weights, without noise."""
  sequences = load_sequences(data_path)
  weights = np.load(spec["weights"])
  trial = spec["trial"]
  model = Model(trial["hidden_size"])
  state = {k: torch.from_numpy(weights[k]) for k in model.state_dict()}
  state["lstm.bias_ih_l0"] = state["lstm.bias_ih_l0"] + state.pop("lstm.bias_hh_l0")
  model.load_state_dict(state, strict=False)
  optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                              lr=trial["learning_rate"],
                              momentum=trial["momentum"], nesterov=True)
  order = np.random.default_rng((spec["data_seed"], 0)).permutation(len(sequences["train"]))
  losses = []
  for i in order[:spec["updates"]]:
    nll, count = model.loss(sequences["train"][i])
    optimizer.zero_grad()
    (nll / count).backward()
    optimizer.step()
    losses.append((nll / count).item())
  return {"losses": losses}


def main(spec_path: str, data_path: str, out_path: str):
  spec = json.loads(open(spec_path).read())
  out = {"train": train, "check": check}[spec["op"]](spec, data_path)
  out.update(torch=torch.__version__)
  with open(out_path, "w") as f:
    json.dump(out, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
