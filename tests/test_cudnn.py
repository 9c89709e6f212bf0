"""backend="cudnn" (jax.experimental.rnn) checked on a CPU. cuDNN itself needs an NVIDIA GPU,
even to trace (its workspace size comes from a live cuDNN handle), so here the same path runs
with jax.experimental.rnn's own reference LSTM (`lstm_ref`, which JAX tests cuDNN against)
in place of the cuDNN call, on the flat weights `pack` builds and jax's `unpack_lstm_weights`
reads back: outputs, carries and gradients match the scan backend (on an NVIDIA GPU the same
comparisons run on cuDNN too). The real primitives are
traced (with a stand-in for the workspace size) to check the call itself, and every input
cuDNN cannot run is refused with a message that names it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import rnn as jax_rnn

from rnn_research.cells import GRUDef, LSTMDef, PRESETS
from rnn_research.layers import LSTM, cudnn, recurrence, run
from rnn_research.torch_weights import lstm_to_torch, params_from_torch

B, T, D, H = 3, 6, 5, 4


def reference_lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers,
                   dropout, bidirectional):
  """jax.experimental.rnn.lstm's signature, computed by its reference on unpacked weights."""
  unpacked = jax_rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers,
                                         bidirectional)
  return jax_rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size,
                          num_layers, dropout, bidirectional)


def has_cuda() -> bool:
  try:
    return bool(jax.devices("cuda"))
  except RuntimeError:
    return False


@pytest.fixture(params=["lstm_ref", pytest.param("cuDNN", marks=pytest.mark.skipif(
    not has_cuda(), reason="cuDNN needs an NVIDIA GPU"))])
def tolerance(request, monkeypatch):
  """Runs backend="cudnn" with lstm_ref in place of cuDNN (on any platform, as on a GPU), or
  on cuDNN itself where there is an NVIDIA GPU, both sides then with float32 matmuls (no
  TF32); -> the relative tolerance of the comparison with the scan."""
  if request.param == "lstm_ref":
    monkeypatch.setattr(cudnn, "check_platform", lambda: None)
    monkeypatch.setattr(cudnn.jax_rnn, "lstm", reference_lstm)
    yield 1e-5
  else:
    with jax.default_matmul_precision("highest"):
      yield 1e-4


def float32_params(cell, seed=0):
  return cell.init_params(jax.random.key(seed), jnp.float32)


def test_pack_is_jax_experimental_rnns_layout_of_pytorchs_weights():
  cell = LSTMDef(D, H, PRESETS["NP"])
  params = float32_params(cell)
  w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(cudnn.pack(cell, params), D, H, 1, False)
  torch = lstm_to_torch(cell, params)
  for got, name in ((w_ih, "weight_ih"), (w_hh, "weight_hh"), (b_ih, "bias_ih"),
                    (b_hh, "bias_hh")):
    np.testing.assert_array_equal(got[0], torch[name])
  back = params_from_torch(cell, {f"{k}_l0": np.asarray(v) for k, v in torch.items()})
  for name in params:  # the export is the import's inverse
    np.testing.assert_array_equal(back[name], params[name])


@pytest.mark.parametrize("reverse", [False, True])
def test_run_matches_scan_with_lengths_and_carries(tolerance, rng, reverse):
  cell = LSTMDef(D, H, PRESETS["NP"])
  params = float32_params(cell)
  xs = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
  carry = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32),
                       cell.initial_carry((B,), jnp.float32))
  lengths = jnp.array([T, 2, 4])

  def loss_and_outputs(backend, params, xs, carry):
    ys, final = run(cell, params, xs, initial_carry=carry, lengths=lengths, reverse=reverse,
                    backend=backend)
    weights = jnp.arange(1, H + 1, dtype=jnp.float32)  # a loss that tells the units apart
    return jnp.sum(jnp.tanh(ys) * weights) + jnp.sum(final.c * final.h), (ys, final)

  grads = {backend: jax.grad(loss_and_outputs, argnums=(1, 2, 3), has_aux=True)(
      backend, params, xs, carry) for backend in ("cudnn", "scan")}
  for got, want in zip(jax.tree.leaves(grads["cudnn"]), jax.tree.leaves(grads["scan"])):
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance / 10)
  ys = grads["cudnn"][1][0]
  assert not np.any(ys[1, 2:]) and np.all(ys[0] != 0)  # zeros past a sequence's length


def test_stacked_bidirectional_layer_matches_scan(tolerance, rng):
  make = lambda backend: LSTM(D, H, 2, bidirectional=True, dropout=0.3, input_dropout=0.2,
                              weight_dropout=0.4, backend=backend, rngs=nnx.Rngs(0, dropout=1))
  models = {backend: make(backend) for backend in ("cudnn", "scan")}
  xs = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
  lengths = jnp.array([T, 1, 5])

  def loss(model, xs):
    ys, carries = model(xs, lengths=lengths)
    return jnp.sum(ys ** 2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(carries))

  # the same dropout masks on both (the same seeds): input, DropConnect and between layers
  grads = {name: nnx.grad(loss, argnums=(0, 1))(model, xs) for name, model in models.items()}
  got, want = (jax.tree.leaves(nnx.state(grads[n][0], nnx.Param)) + [grads[n][1]]
               for n in ("cudnn", "scan"))
  assert len(got) == 2 * 2 * 3 + 1  # W, R, b of 2 layers x 2 directions, and the inputs
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance / 10)


def test_the_call_traces_to_cudnns_forward_and_backward_primitives(monkeypatch):
  """The real jax.experimental.rnn.lstm, forward and gradient, traced to a jaxpr. Its
  abstract evaluation asks cuDNN for the reserve space's size, which needs a GPU: a stand-in
  answers here (lowering for cuda needs the CUDA plugin and a GPU as well)."""
  from jax._src.lib import gpu_rnn
  monkeypatch.setattr(cudnn, "check_platform", lambda: None)
  monkeypatch.setattr(gpu_rnn, "compute_rnn_workspace_reserve_space_sizes",
                      lambda *args: (1024, 2048), raising=False)
  cell = LSTMDef(D, H, PRESETS["NP"])
  params = float32_params(cell)

  def loss(params, xs):
    ys, final = run(cell, params, xs, lengths=jnp.array([T, 2, 4]), reverse=True,
                    backend="cudnn")
    return jnp.sum(ys) + jnp.sum(final.c)

  xs = jax.ShapeDtypeStruct((B, T, D), jnp.float32)
  jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, xs))
  assert "rnn_fwd" in jaxpr and "rnn_bwd" in jaxpr
  shapes = jax.eval_shape(jax.grad(loss, argnums=(0, 1)), params, xs)
  assert jax.tree.map(lambda s: s.shape, shapes) == (
      {name: tuple(shape) for name, shape in cell.param_shapes().items()}, (B, T, D))


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the error is for other platforms")
def test_refused_off_nvidia_gpus(rng):
  cell = LSTMDef(D, H, PRESETS["NP"])
  with pytest.raises(ValueError, match="backend='cudnn' runs cuDNN's LSTM on NVIDIA GPUs; this "
                                       "process computes on 'cpu'"):
    run(cell, float32_params(cell), jnp.ones((B, T, D), jnp.float32), backend="cudnn")


@pytest.mark.parametrize("call, message", [
    (lambda: LSTM(D, H, variant="V", backend="cudnn", rngs=nnx.Rngs(0)),
     r"the no-peephole LSTM: an LSTMDef of variant 'NP' \(or 'classic'\), got LSTMDef with spec"),
    (lambda: run(GRUDef(D, H), GRUDef(D, H).init_params(jax.random.key(0)),
                 jnp.ones((B, T, D), jnp.float32), backend="cudnn"),
     "variant 'NP' .* got GRUDef; use backend='scan', 'pallas' or 'auto'"),
    (lambda: LSTM(D, H, proj_size=2, cell_clip=1.0, backend="cudnn", rngs=nnx.Rngs(0)),
     r"supports none of .*; got \['proj_size', 'cell_clip'\]"),
    (lambda: LSTM(D, H, layer_norm=True, backend="cudnn", rngs=nnx.Rngs(0)),
     r"supports none of .*; got \['layer_norm'\]"),
    (lambda: LSTM(D, H, recurrent_dropout=0.1, zoneout_h=0.1, backend="cudnn",
                  rngs=nnx.Rngs(0)),
     r"no resets, recurrent dropout, zoneout or grad_clip; got \['recurrent_dropout \(h_mask\)', "
     r"'zoneout'\]"),
    (lambda: LSTM(D, H, grad_clip=1.0, backend="cudnn", rngs=nnx.Rngs(0)),
     r"got \['grad_clip'\]"),
    (lambda: LSTM(D, H, backend="cudnn", rngs=nnx.Rngs(0))(
        jnp.ones((B, T, D), jnp.float32), resets=jnp.zeros((B, T), bool)), r"got \['resets'\]"),
    (lambda: run(LSTMDef(D, H), jax.tree.map(lambda a: a.astype(jnp.bfloat16),
                                             float32_params(LSTMDef(D, H))),
                 jnp.ones((B, T, D), jnp.bfloat16), backend="cudnn"),
     r"needs float32 inputs and params \(jax.experimental.rnn\), got \['bfloat16'\]"),
    (lambda: recurrence(LSTMDef(D, H), float32_params(LSTMDef(D, H)),
                        jnp.ones((T, B, 4 * H), jnp.float32),
                        LSTMDef(D, H).initial_carry((B,), jnp.float32), backend="cudnn"),
     "backend='cudnn' runs whole sequences .* recurrence takes input projections"),
    (lambda: LSTM(D, H, backend="cuDNN", rngs=nnx.Rngs(0)),
     r"backend must be one of \('scan', 'pallas', 'auto', 'cudnn'\), got 'cuDNN'"),
])
def test_what_cudnn_cannot_run_is_refused(call, message):
  with pytest.raises(ValueError, match=message):
    call()
