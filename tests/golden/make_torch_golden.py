"""Writes the PyTorch golden files that tests/test_torch_parity.py compares against.

Run with a Python that has torch (the tests themselves never import it):
    python3.11 -m pip install torch==2.13.0 numpy
    python3.11 tests/golden/make_torch_golden.py
Each case saves, in float64: the state dict ("sd/<name>"), the inputs x [B, T, D] and lengths,
the outputs y, h_n (and c_n), the loss weights, and the gradients of sum(y * weights) with
respect to x ("grad/x") and every weight ("grad/<name>").
"""
import pathlib

import numpy as np
import torch

HERE = pathlib.Path(__file__).parent
B, T, D, H = 3, 7, 5, 6

CASES = {
    "lstm": (torch.nn.LSTM, dict(hidden_size=H), False),
    "lstm_proj": (torch.nn.LSTM, dict(hidden_size=H, proj_size=4), False),
    "lstm_2layer_bidirectional": (torch.nn.LSTM, dict(hidden_size=H, num_layers=2, bidirectional=True), False),
    "lstm_proj_2layer_bidirectional_lengths": (
        torch.nn.LSTM, dict(hidden_size=H, proj_size=4, num_layers=2, bidirectional=True), True),
    "gru": (torch.nn.GRU, dict(hidden_size=H), False),
    "gru_2layer_bidirectional_lengths": (torch.nn.GRU, dict(hidden_size=H, num_layers=2, bidirectional=True), True),
    "rnn_tanh": (torch.nn.RNN, dict(hidden_size=H), False),
    "rnn_relu_2layer": (torch.nn.RNN, dict(hidden_size=H, num_layers=2, nonlinearity="relu"), False),
}


def make(name, module_class, kwargs, use_lengths, seed):
  torch.manual_seed(seed)
  module = module_class(D, batch_first=True, **kwargs).double()
  x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
  lengths = torch.tensor([T, 4, 2]) if use_lengths else torch.full((B,), T)
  if use_lengths:
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                     enforce_sorted=False)
    out, state = module(packed)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
  else:
    y, state = module(x)
  weights = torch.randn(y.shape, dtype=torch.float64)
  (y * weights).sum().backward()
  h_n, c_n = state if isinstance(state, tuple) else (state, None)
  arrays = {"x": x.detach().numpy(), "lengths": lengths.numpy(), "y": y.detach().numpy(),
            "h_n": h_n.detach().numpy(), "weights": weights.numpy(),
            "grad/x": x.grad.numpy(), "config": np.array(repr(kwargs))}
  if c_n is not None:
    arrays["c_n"] = c_n.detach().numpy()
  for key, value in module.state_dict().items():
    arrays[f"sd/{key}"] = value.numpy()
  for key, param in module.named_parameters():
    arrays[f"grad/{key}"] = param.grad.numpy()
  np.savez_compressed(HERE / f"{name}.npz", **arrays)


if __name__ == "__main__":
  for seed, (name, (module_class, kwargs, use_lengths)) in enumerate(CASES.items()):
    make(name, module_class, kwargs, use_lengths, seed)
    print("wrote", name, "with torch", torch.__version__)
