"""Import PyTorch `nn.LSTM` (with `proj_size`), `nn.GRU` and `nn.RNN` state dicts, exactly.

Works on any mapping of names to arrays (torch tensors, NumPy arrays): torch is not imported.
PyTorch's gate orders are LSTM (i, f, g, o) and GRU (r, z, n); its two biases b_ih + b_hh are one
sum here except the GRU's, whose b_hn sits inside the reset product and stays separate (`c`).
"""
import numpy as np

from rnn_research.cells.base import CellDef
from rnn_research.cells.elman import ElmanDef
from rnn_research.cells.gru import GRUDef
from rnn_research.cells.lstm import LSTMDef, PRESETS


def _array(tensor) -> np.ndarray:
  if hasattr(tensor, "detach"):
    tensor = tensor.detach().cpu().numpy()
  return np.asarray(tensor)


def _lstm(cell: LSTMDef, w: dict) -> dict:
  if cell.spec != PRESETS["NP"]:
    raise ValueError("PyTorch's nn.LSTM is the no-peephole LSTM: build the layer with "
                     f"variant='NP' (or 'classic'), got spec {cell.spec}")
  # PyTorch's rows are (i, f, g, o); ours are (z, i, f, o) with z = g.
  order = lambda a: np.concatenate([a[2 * cell.hidden_size:3 * cell.hidden_size],
                                    a[:2 * cell.hidden_size], a[3 * cell.hidden_size:]], 0)
  params = {"W": order(w["weight_ih"]).T, "R": order(w["weight_hh"]).T,
            "b": order(w["bias_ih"] + w["bias_hh"])}
  if cell.proj_size:
    params["P"] = w["weight_hr"].T
  return params


def _gru(cell: GRUDef, w: dict) -> dict:
  if not cell.reset_after:
    raise ValueError("PyTorch's nn.GRU applies the reset gate after the recurrent matmul: "
                     "build the layer with reset_after=True")
  return {"W": w["weight_ih"].T, "b": w["bias_ih"], "R": w["weight_hh"].T, "c": w["bias_hh"]}


def _elman(cell: ElmanDef, w: dict) -> dict:
  return {"W": w["weight_ih"].T, "b": w["bias_ih"] + w["bias_hh"], "R": w["weight_hh"].T}


CONVERTERS = {LSTMDef: _lstm, GRUDef: _gru, ElmanDef: _elman}


def params_from_torch(cell: CellDef, state_dict, layer: int = 0, reverse: bool = False) -> dict:
  """The params of one layer and direction of a PyTorch RNN state dict, for `cell`."""
  if type(cell) not in CONVERTERS:
    raise ValueError(f"PyTorch has no counterpart of {type(cell).__name__}; "
                     f"importable: {[c.__name__ for c in CONVERTERS]}")
  if getattr(cell, "layer_norm", False) or getattr(cell, "num_heads", 1) != 1:
    raise ValueError("PyTorch's RNNs have no layer norm and a dense recurrent weight: import "
                     "into a cell with layer_norm=False and num_heads=1")
  suffix = f"_l{layer}" + ("_reverse" if reverse else "")
  names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
  if getattr(cell, "proj_size", 0):
    names.append("weight_hr")
  missing = [n + suffix for n in names if n + suffix not in state_dict]
  if missing:
    raise ValueError(f"state_dict lacks {missing} (has {sorted(state_dict)})")
  weights = {n: _array(state_dict[n + suffix]) for n in names}
  params = CONVERTERS[type(cell)](cell, weights)
  cell.check_params(params)
  return params
