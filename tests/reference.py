"""Float64 NumPy step-by-step implementations of each cell's published equations.

Written from the papers, independently of the library: per-gate matrices in the papers'
orientation (W_z x, so W_z is [N, D]), one time step at a time. Each function takes xs [B, T, D]
and returns ys [B, T, out] and the final state.
"""
import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


IDENTITY = lambda x: x


def layer_norm(v):
  """Ba et al. 2016 over the last axis, without gain and bias, eps 1e-5 inside the sqrt."""
  mean = v.mean(-1, keepdims=True)
  return (v - mean) / np.sqrt(((v - mean) ** 2).mean(-1, keepdims=True) + 1e-5)


def _mix(keep, previous, new):
  """Zoneout: keep ⊙ previous + (1 − keep) ⊙ new (keep None: new)."""
  return new if keep is None else keep * previous + (1 - keep) * new


def lstm(paper, spec, xs, c0=None, y0=None, *, ln=None, cell_clip=None, resets=None,
         h_mask=None, keep_c=None, keep_h=None):
  """Greff et al.'s LSTM block (and LSTMP): paper = {W_z, R_z, b_z, W_i, ..., p_i, ..., R_fi, P}.

  Options: ln = {gx_<gate>, gh_<gate>, gc, bc}: layer norm of Ba et al. (W x and R y⁻ normalised
  apart, gains gx, gh; y = o ⊙ h(LN(c)·gc + bc)); cell_clip: c clipped after its update;
  resets [B, T]: the state restarts from (c0, y0) at marked steps; h_mask [B, Ny]: y⁻ ⊙ h_mask
  in the recurrent terms; keep_c [B, T, N], keep_h [B, T, Ny]: zoneout weights."""
  g = np.tanh if spec.input_activation == "tanh" else IDENTITY
  h = np.tanh if spec.output_activation == "tanh" else IDENTITY
  batch, steps, _ = xs.shape
  n = paper["b_z"].shape[0]
  c = np.zeros((batch, n)) if c0 is None else c0
  y = np.zeros((batch, paper["R_z"].shape[1])) if y0 is None else y0
  c_start, y_start = c, y
  prev = {gate: np.zeros((batch, n)) for gate in "ifo"}  # FGR: gate activations at t-1
  ys = []
  for t in range(steps):
    x = xs[:, t]
    if resets is not None:
      r = resets[:, t, None]
      c, y = np.where(r, c_start, c), np.where(r, y_start, y)
    c_prev, y_prev = c, y
    y_rec = y if h_mask is None else y * h_mask
    if ln is None:
      lin = lambda k: x @ paper[f"W_{k}"].T + y_rec @ paper[f"R_{k}"].T + paper[f"b_{k}"]
    else:
      lin = lambda k: (layer_norm(x @ paper[f"W_{k}"].T) * ln[f"gx_{k}"]
                       + layer_norm(y_rec @ paper[f"R_{k}"].T) * ln[f"gh_{k}"] + paper[f"b_{k}"])

    def gate_pre(k, cell):
      a = lin(k)
      if spec.peepholes:
        a = a + paper[f"p_{k}"] * cell
      if spec.full_gate_recurrence:
        a = a + sum(prev[src] @ paper[f"R_{src}{k}"].T for src in spec.sigmoid_gates)
      return a

    z = g(lin("z"))
    i = sigmoid(gate_pre("i", c)) if spec.input_gate else np.ones_like(z)
    if spec.forget_gate == "gate":
      f = sigmoid(gate_pre("f", c))
    elif spec.forget_gate == "coupled":
      f = 1 - i
    else:
      f = np.ones_like(z)
    c = z * i + c * f
    if cell_clip is not None:
      c = np.clip(c, -cell_clip, cell_clip)
    o = sigmoid(gate_pre("o", c)) if spec.output_gate else np.ones_like(z)
    y = h(c if ln is None else layer_norm(c) * ln["gc"] + ln["bc"]) * o
    if "P" in paper:
      y = y @ paper["P"].T
    c = _mix(None if keep_c is None else keep_c[:, t], c_prev, c)
    y = _mix(None if keep_h is None else keep_h[:, t], y_prev, y)
    prev = {"i": i, "f": f, "o": o}
    ys.append(y)
  return np.stack(ys, 1), (c, y)


def gru(w, xs, h0=None, reset_after=True, *, ln=None, resets=None, h_mask=None, keep_h=None):
  """PyTorch nn.GRU (reset_after) or Cho et al. 2014. w: W_r/W_u/W_n [N, D], R_r/R_u/R_n [N, N],
  b_r/b_u/b_n, and for reset_after the recurrent biases c_r/c_u/c_n.

  Options: ln = {gx_<gate>, gh_<gate>}: each input term W_k x and recurrent term (R_k h⁻, or
  R_n (r ⊙ h⁻) for Cho) layer-normalised and scaled by its gain; resets [B, T]; h_mask [B, N]
  on h⁻ in the R_r, R_u terms (and R_n for reset_after); keep_h [B, T, N] zoneout weights."""
  batch, steps, _ = xs.shape
  h = np.zeros((batch, w["b_r"].shape[0])) if h0 is None else h0
  h_start = h
  norm = (lambda v, name: v) if ln is None else (lambda v, name: layer_norm(v) * ln[name])
  ys = []
  for t in range(steps):
    x = xs[:, t]
    if resets is not None:
      h = np.where(resets[:, t, None], h_start, h)
    h_rec = h if h_mask is None else h * h_mask
    c = (lambda k: w[f"c_{k}"]) if reset_after else (lambda k: 0.0)
    xw = lambda k: norm(x @ w[f"W_{k}"].T, f"gx_{k}") + w[f"b_{k}"]
    r = sigmoid(xw("r") + norm(h_rec @ w["R_r"].T, "gh_r") + c("r"))
    u = sigmoid(xw("u") + norm(h_rec @ w["R_u"].T, "gh_u") + c("u"))
    if reset_after:
      n = np.tanh(xw("n") + r * (norm(h_rec @ w["R_n"].T, "gh_n") + c("n")))
    else:
      n = np.tanh(xw("n") + norm((r * h) @ w["R_n"].T, "gh_n"))
    new = (1 - u) * n + u * h
    h = _mix(None if keep_h is None else keep_h[:, t], h, new)
    ys.append(h)
  return np.stack(ys, 1), h


def elman(w, xs, h0=None, activation="tanh"):
  """h = act(W x + b + R h⁻)."""
  act = np.tanh if activation == "tanh" else (lambda a: np.maximum(a, 0))
  h = np.zeros((xs.shape[0], w["b"].shape[0])) if h0 is None else h0
  ys = []
  for t in range(xs.shape[1]):
    h = act(xs[:, t] @ w["W"].T + w["b"] + h @ w["R"].T)
    ys.append(h)
  return np.stack(ys, 1), h


def mgu(w, xs, h0=None):
  """Zhou et al. 2016."""
  h = np.zeros((xs.shape[0], w["b_f"].shape[0])) if h0 is None else h0
  ys = []
  for t in range(xs.shape[1]):
    x = xs[:, t]
    f = sigmoid(x @ w["W_f"].T + w["b_f"] + h @ w["U_f"].T)
    n = np.tanh(x @ w["W_h"].T + w["b_h"] + (f * h) @ w["U_h"].T)
    h = (1 - f) * h + f * n
    ys.append(h)
  return np.stack(ys, 1), h


def mut(w, xs, variant, h0=None):
  """Jozefowicz et al. 2015, MUT1-3, in their notation (W_xz, W_hr, ..., b_z, b_r, b_h)."""
  h = np.zeros((xs.shape[0], w["b_z"].shape[0])) if h0 is None else h0
  ys = []
  for t in range(xs.shape[1]):
    x = xs[:, t]
    if variant == "MUT1":
      z = sigmoid(x @ w["W_xz"].T + w["b_z"])
      r = sigmoid(x @ w["W_xr"].T + h @ w["W_hr"].T + w["b_r"])
      h = np.tanh((r * h) @ w["W_hh"].T + np.tanh(x) + w["b_h"]) * z + h * (1 - z)
    elif variant == "MUT2":
      z = sigmoid(x @ w["W_xz"].T + h @ w["W_hz"].T + w["b_z"])
      r = sigmoid(x + h @ w["W_hr"].T + w["b_r"])
      h = np.tanh((r * h) @ w["W_hh"].T + x @ w["W_xh"].T + w["b_h"]) * z + h * (1 - z)
    else:
      z = sigmoid(x @ w["W_xz"].T + np.tanh(h) @ w["W_hz"].T + w["b_z"])
      r = sigmoid(x @ w["W_xr"].T + h @ w["W_hr"].T + w["b_r"])
      h = np.tanh((r * h) @ w["W_hh"].T + x @ w["W_xh"].T + w["b_h"]) * z + h * (1 - z)
    ys.append(h)
  return np.stack(ys, 1), h
