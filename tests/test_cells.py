"""Every cell and preset against the float64 NumPy reference of its equations; parameter
counts; the course's identities; the paper's notation; bad arguments."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import CASES, D, H, P, random_params, rel_err
from rnn_research.cells import ElmanDef, GRUDef, LSTMDef, MUTDef, PRESETS, lstm, lstm_spec
from rnn_research.layers import run

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cell_matches_reference(case, dtype, rng):
  params = random_params(case.cell, rng, dtype)
  xs = rng.standard_normal((3, 7, case.cell.in_features)).astype(dtype)
  ys, _ = run(case.cell, params, jnp.asarray(xs))
  ref_ys, _ = case.reference(params, xs.astype(np.float64))
  assert ys.dtype == dtype
  assert rel_err(ys, ref_ys) < TOLERANCE[dtype]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_step_matches_reference(case, rng):
  """The one-step function (what nnx.RNN calls) gives the same sequence as the reference."""
  params = random_params(case.cell, rng, np.float64)
  xs = rng.standard_normal((2, 4, case.cell.in_features))
  carry, ys = case.cell.initial_carry((2,), jnp.float64), []
  for t in range(4):
    carry, y = case.cell.step(params, carry, xs[:, t])
    ys.append(y)
  assert rel_err(jnp.stack(ys, 1), case.reference(params, xs)[0]) < 1e-12


N, M = H, D
PARAM_COUNTS = {
    "V": 4 * N * M + 4 * N * N + 3 * N + 4 * N,
    "NP": 4 * N * M + 4 * N * N + 4 * N,
    "NIG": 3 * N * M + 3 * N * N + 2 * N + 3 * N,
    "NFG": 3 * N * M + 3 * N * N + 2 * N + 3 * N,
    "NOG": 3 * N * M + 3 * N * N + 2 * N + 3 * N,
    "NIAF": 4 * N * M + 4 * N * N + 3 * N + 4 * N,
    "NOAF": 4 * N * M + 4 * N * N + 3 * N + 4 * N,
    "CIFG": 3 * N * M + 3 * N * N + 2 * N + 3 * N,
    "FGR": 4 * N * M + 4 * N * N + 3 * N + 4 * N + 9 * N * N,
    "classic": 4 * N * M + 4 * N * N + 4 * N,
}


@pytest.mark.parametrize("variant", sorted(PRESETS))
def test_lstm_parameter_counts(variant):
  assert LSTMDef(M, N, PRESETS[variant]).num_params() == PARAM_COUNTS[variant]


def test_other_parameter_counts():
  assert LSTMDef(M, N, PRESETS["NP"], proj_size=P).num_params() == 4*N*M + 4*N*P + 4*N + N*P
  assert GRUDef(M, N, reset_after=True).num_params() == 3*N*M + 3*N*N + 6*N
  assert GRUDef(M, N, reset_after=False).num_params() == 3*N*M + 3*N*N + 3*N
  assert ElmanDef(M, N).num_params() == N*M + N*N + N
  assert MUTDef(N, N, "MUT1").num_params() == 2*N*N + 2*N*N + 3*N
  assert MUTDef(N, N, "MUT2").num_params() == 2*N*N + 3*N*N + 3*N
  assert MUTDef(M, N, "MUT3").num_params() == 3*N*M + 3*N*N + 3*N


def test_cifg_is_vanilla_minus_forget_gate():
  vanilla = lstm.paper_names(LSTMDef(M, N, PRESETS["V"]))
  cifg = lstm.paper_names(LSTMDef(M, N, PRESETS["CIFG"]))
  assert sorted(cifg) == sorted(set(vanilla) - {"W_f", "R_f", "p_f", "b_f"})


def test_pinned_lstm_is_elman_with_tanh_output(rng):
  """Forget gate pinned to 0, input and output gates to 1: c = z and y = tanh(z), so the LSTM
  is an Elman RNN (on W_z, R_z, b_z) whose recurrent input is tanh of its state."""
  cell = LSTMDef(D, H, lstm_spec("NP"))
  paper = lstm.to_paper(cell, random_params(cell, rng, np.float64))
  for gate, bias in (("i", 1e4), ("f", -1e4), ("o", 1e4)):
    paper[f"W_{gate}"], paper[f"R_{gate}"] = 0 * paper[f"W_{gate}"], 0 * paper[f"R_{gate}"]
    paper[f"b_{gate}"] = jnp.full((H,), bias)
  xs = rng.standard_normal((2, 6, D))
  ys, _ = run(cell, lstm.from_paper(cell, paper), jnp.asarray(xs))

  elman = ElmanDef(D, H)
  elman_params = {"W": paper["W_z"].T, "R": paper["R_z"].T, "b": paper["b_z"]}
  y, expected = jnp.zeros((2, H)), []
  for t in range(6):
    state, _ = elman.step(elman_params, y, xs[:, t])
    y = jnp.tanh(state)
    expected.append(y)
  assert rel_err(ys, jnp.stack(expected, 1)) < 1e-12


@pytest.mark.parametrize("variant", ["V", "CIFG", "FGR", "NOG"])
def test_paper_notation_round_trip(variant, rng):
  cell = LSTMDef(D, H, PRESETS[variant], proj_size=P if variant == "V" else 0)
  params = random_params(cell, rng, np.float64)
  paper = lstm.to_paper(cell, params)
  assert paper["W_z"].shape == (H, D) and paper["b_z"].shape == (H,)
  back = lstm.from_paper(cell, paper)
  assert all(np.array_equal(back[k], params[k]) for k in params)


def test_fgr_has_nine_gate_matrices():
  names = lstm.paper_names(LSTMDef(D, H, PRESETS["FGR"]))
  assert sorted(n for n in names if len(n) == 4 and n.startswith("R_")) == sorted(
      f"R_{s}{t}" for s in "ifo" for t in "ifo")


def test_forget_bias_initialisation():
  for bias in (1.0, 2.5):
    cell = LSTMDef(D, H, PRESETS["V"], forget_bias=bias)
    paper = lstm.to_paper(cell, cell.init_params(jax.random.key(0)))
    assert np.all(paper["b_f"] == bias) and np.all(paper["b_i"] == 0)
  cifg = LSTMDef(D, H, PRESETS["CIFG"], forget_bias=1.0)
  b_i = lstm.to_paper(cifg, cifg.init_params(jax.random.key(0)))["b_i"]
  assert np.allclose(1 - jax.nn.sigmoid(b_i), jax.nn.sigmoid(1.0))  # f = 1 - i starts at σ(1)


@pytest.mark.parametrize("make, message", [
    (lambda: lstm_spec("VANILLA"), "variant must be one of"),
    (lambda: LSTMDef(D, H, PRESETS["V"], proj_size=H), "proj_size"),
    (lambda: LSTMDef(D, 0), "hidden_size"),
    (lambda: ElmanDef(D, H, "sigmoid"), "activation"),
    (lambda: MUTDef(D, H, "MUT1"), "in_features must equal"),
    (lambda: MUTDef(H, H, "MUT4"), "variant"),
    (lambda: lstm.LSTMSpec(forget_gate="maybe"), "forget_gate"),
    (lambda: lstm.LSTMSpec(input_activation="softsign"), "input_activation"),
])
def test_bad_cell_arguments(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_from_paper_names_missing_entry(rng):
  cell = LSTMDef(D, H, PRESETS["V"])
  paper = lstm.to_paper(cell, random_params(cell, rng, np.float64))
  del paper["p_o"]
  with pytest.raises(ValueError, match="missing \\['p_o'\\]"):
    lstm.from_paper(cell, paper)
