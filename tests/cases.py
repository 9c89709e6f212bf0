"""The cells under test, with converters from library params to the reference's notation."""
import dataclasses
from typing import Callable

import numpy as np

import reference
from rnn_research.cells import ElmanDef, GRUDef, LSTMDef, MGUDef, MUTDef, PRESETS, lstm
from rnn_research.cells.base import CellDef

D, H, P = 5, 6, 4


def blocks(a, n):
  return [np.asarray(b, np.float64) for b in np.split(np.asarray(a), n, axis=-1)]


def gru_weights(cell, p):
  w = {}
  for k, W, b in zip("run", blocks(p["W"], 3), blocks(p["b"], 3)):
    w[f"W_{k}"], w[f"b_{k}"] = W.T, b
  if cell.reset_after:
    for k, R, c in zip("run", blocks(p["R"], 3), blocks(p["c"], 3)):
      w[f"R_{k}"], w[f"c_{k}"] = R.T, c
  else:
    R_r, R_u = blocks(p["R"], 2)
    w.update(R_r=R_r.T, R_u=R_u.T, R_n=np.asarray(p["R_n"], np.float64).T)
  return w


def mgu_weights(cell, p):
  (W_f, W_h), (b_f, b_h) = blocks(p["W"], 2), blocks(p["b"], 2)
  f64 = lambda a: np.asarray(a, np.float64)
  return dict(W_f=W_f.T, W_h=W_h.T, b_f=b_f, b_h=b_h, U_f=f64(p["R"]).T, U_h=f64(p["R_n"]).T)


def mut_weights(cell, p):
  f64 = lambda a: np.asarray(a, np.float64)
  b_z, b_r, b_h = blocks(p["b"], 3)
  w = dict(b_z=b_z, b_r=b_r, b_h=b_h, W_hh=f64(p["R_h"]).T)
  if cell.variant == "MUT1":
    W_xz, W_xr = blocks(p["W"], 2)
    w.update(W_xz=W_xz.T, W_xr=W_xr.T, W_hr=f64(p["R"]).T)
  elif cell.variant == "MUT2":
    (W_xz, W_xh), (W_hz, W_hr) = blocks(p["W"], 2), blocks(p["R"], 2)
    w.update(W_xz=W_xz.T, W_xh=W_xh.T, W_hz=W_hz.T, W_hr=W_hr.T)
  else:
    W_xz, W_xr, W_xh = blocks(p["W"], 3)
    w.update(W_xz=W_xz.T, W_xr=W_xr.T, W_xh=W_xh.T, W_hz=f64(p["R_z"]).T, W_hr=f64(p["R"]).T)
  return w


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  cell: CellDef
  reference: Callable  # (params, xs float64) -> (ys, final output)

  def __str__(self):
    return self.name


def _lstm_case(name, spec_name, proj=0):
  cell = LSTMDef(D, H, PRESETS[spec_name], proj_size=proj)
  ref = lambda p, xs: reference.lstm(
      {k: np.asarray(v, np.float64) for k, v in lstm.to_paper(cell, p).items()}, cell.spec, xs)
  return Case(name, cell, lambda p, xs: (lambda ys, s: (ys, s[1]))(*ref(p, xs)))


CASES = [_lstm_case(f"lstm-{v}", v) for v in PRESETS]
CASES += [_lstm_case("lstmp-V", "V", P), _lstm_case("lstmp-NP", "NP", P),
          _lstm_case("lstmp-FGR", "FGR", P)]
for reset_after in (True, False):
  cell = GRUDef(D, H, reset_after)
  CASES.append(Case(f"gru-reset_after={reset_after}", cell,
                    lambda p, xs, cell=cell: reference.gru(gru_weights(cell, p), xs,
                                                           reset_after=cell.reset_after)))
for act in ("tanh", "relu"):
  CASES.append(Case(f"elman-{act}", ElmanDef(D, H, act),
                    lambda p, xs, act=act: reference.elman(
                        {"W": np.asarray(p["W"], np.float64).T, "b": np.asarray(p["b"], np.float64),
                         "R": np.asarray(p["R"], np.float64).T}, xs, activation=act)))
CASES.append(Case("mgu", MGUDef(D, H), lambda p, xs: reference.mgu(mgu_weights(None, p), xs)))
for variant in ("MUT1", "MUT2", "MUT3"):
  cell = MUTDef(H if variant != "MUT3" else D, H, variant)
  CASES.append(Case(variant.lower(), cell,
                    lambda p, xs, cell=cell: reference.mut(mut_weights(cell, p), xs, cell.variant)))


def random_params(cell: CellDef, rng, dtype, scale=0.5):
  """Every parameter drawn afresh (biases and peepholes too), so no term hides behind a zero."""
  return {k: (scale * rng.standard_normal(s)).astype(dtype) for k, s in cell.param_shapes().items()}


def rel_err(out, ref):
  out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
  return np.linalg.norm(out - ref) / np.linalg.norm(ref)
