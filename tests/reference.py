"""Float64 NumPy step-by-step implementations of each cell's published equations.

Written from the papers, independently of the library: per-gate matrices in the papers'
orientation (W_z x, so W_z is [N, D]), one time step at a time. Each function takes xs [B, T, D]
and returns ys [B, T, out] and the final state.
"""
import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


IDENTITY = lambda x: x


def lstm(paper, spec, xs, c0=None, y0=None):
  """Greff et al.'s LSTM block (and LSTMP): paper = {W_z, R_z, b_z, W_i, ..., p_i, ..., R_fi, P}."""
  g = np.tanh if spec.input_activation == "tanh" else IDENTITY
  h = np.tanh if spec.output_activation == "tanh" else IDENTITY
  batch, steps, _ = xs.shape
  n = paper["b_z"].shape[0]
  c = np.zeros((batch, n)) if c0 is None else c0
  y = np.zeros((batch, paper["R_z"].shape[1])) if y0 is None else y0
  prev = {gate: np.zeros((batch, n)) for gate in "ifo"}  # FGR: gate activations at t-1
  ys = []
  for t in range(steps):
    x = xs[:, t]
    lin = lambda k: x @ paper[f"W_{k}"].T + y @ paper[f"R_{k}"].T + paper[f"b_{k}"]

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
    o = sigmoid(gate_pre("o", c)) if spec.output_gate else np.ones_like(z)
    y = h(c) * o
    if "P" in paper:
      y = y @ paper["P"].T
    prev = {"i": i, "f": f, "o": o}
    ys.append(y)
  return np.stack(ys, 1), (c, y)


def gru(w, xs, h0=None, reset_after=True):
  """PyTorch nn.GRU (reset_after) or Cho et al. 2014. w: W_r/W_u/W_n [N, D], R_r/R_u/R_n [N, N],
  b_r/b_u/b_n, and for reset_after the recurrent biases c_r/c_u/c_n."""
  batch, steps, _ = xs.shape
  h = np.zeros((batch, w["b_r"].shape[0])) if h0 is None else h0
  ys = []
  for t in range(steps):
    x = xs[:, t]
    c = (lambda k: w[f"c_{k}"]) if reset_after else (lambda k: 0.0)
    r = sigmoid(x @ w["W_r"].T + w["b_r"] + h @ w["R_r"].T + c("r"))
    u = sigmoid(x @ w["W_u"].T + w["b_u"] + h @ w["R_u"].T + c("u"))
    if reset_after:
      n = np.tanh(x @ w["W_n"].T + w["b_n"] + r * (h @ w["R_n"].T + c("n")))
    else:
      n = np.tanh(x @ w["W_n"].T + w["b_n"] + (r * h) @ w["R_n"].T)
    h = (1 - u) * n + u * h
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
