"""Import PyTorch `nn.LSTM` (with `proj_size`), `nn.GRU` and `nn.RNN` state dicts, exactly, and
export an LSTM layer's weights in PyTorch's (and cuDNN's) layout.

Works on any mapping of names to arrays (torch tensors, NumPy arrays): torch is not imported.
PyTorch's gate orders are LSTM (i, f, g, o) and GRU (r, z, n); its two biases b_ih + b_hh are one
sum here except the GRU's, whose b_hn sits inside the reset product and stays separate (`c`).
"""
import jax.numpy as jnp
import numpy as np

from rnn_research.cells.base import CellDef
from rnn_research.cells.elman import ElmanDef
from rnn_research.cells.gru import GRUDef
from rnn_research.cells.lstm import LSTMDef, PRESETS


def _array(tensor) -> np.ndarray:
  if hasattr(tensor, "detach"):
    tensor = tensor.detach().cpu().numpy()
  return np.asarray(tensor)


# PyTorch's (and cuDNN's) LSTM gate blocks are (i, f, g, o); ours are (z, i, f, o), z = g:
# PyTorch's block k is our block TORCH_GATE_ORDER[k].
TORCH_GATE_ORDER = (1, 2, 0, 3)


def _gate_rows(hidden_size: int, order) -> np.ndarray:
  """Indices that take the hidden_size-wide gate blocks of a [4·hidden_size] axis in `order`."""
  return np.concatenate([np.arange(k * hidden_size, (k + 1) * hidden_size) for k in order])


def _check_lstm(cell: LSTMDef) -> None:
  if cell.spec != PRESETS["NP"]:
    raise ValueError("PyTorch's nn.LSTM is the no-peephole LSTM: build the layer with "
                     f"variant='NP' (or 'classic'), got spec {cell.spec}")


def _lstm(cell: LSTMDef, w: dict) -> dict:
  _check_lstm(cell)
  rows = _gate_rows(cell.hidden_size, np.argsort(TORCH_GATE_ORDER))
  params = {"W": w["weight_ih"][rows].T, "R": w["weight_hh"][rows].T,
            "b": (w["bias_ih"] + w["bias_hh"])[rows]}
  if cell.proj_size:
    params["P"] = w["weight_hr"].T
  return params


def lstm_to_torch(cell: LSTMDef, params) -> dict:
  """One layer and direction of an NP LSTM in nn.LSTM's layout (names without the "_l0"
  suffix): weight_ih [4N, D], weight_hh [4N, Ny], bias_ih [4N] (our b), bias_hh [4N] zeros,
  weight_hr [P, N] with proj_size; gates (i, f, g, o). The inverse of `params_from_torch`;
  jnp, so gradients flow back through it."""
  _check_torch_counterpart(cell)
  _check_lstm(cell)
  rows = _gate_rows(cell.hidden_size, TORCH_GATE_ORDER)
  weights = {"weight_ih": params["W"][:, rows].T, "weight_hh": params["R"][:, rows].T,
             "bias_ih": params["b"][rows], "bias_hh": jnp.zeros_like(params["b"])}
  if cell.proj_size:
    weights["weight_hr"] = params["P"].T
  return weights


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
  _check_torch_counterpart(cell)
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


def _check_torch_counterpart(cell: CellDef) -> None:
  if type(cell) not in CONVERTERS:
    raise ValueError(f"PyTorch has no counterpart of {type(cell).__name__}; "
                     f"importable: {[c.__name__ for c in CONVERTERS]}")
  if getattr(cell, "layer_norm", False) or getattr(cell, "num_heads", 1) != 1:
    raise ValueError("PyTorch's RNNs have no layer norm and a dense recurrent weight: use a "
                     "cell with layer_norm=False and num_heads=1")
