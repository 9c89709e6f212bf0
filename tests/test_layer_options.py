"""Recurrence and layer options of issue 11: state resets, variational recurrent dropout, zoneout,
recurrent-gradient clipping, remat; the layer's masks (input, recurrent, DropConnect, zoneout);
truncated BPTT with k1 != k2; bad values."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from cases import gru_weights, random_params, rel_err
from rnn_research.cells import GRUDef, LSTMCarry, LSTMDef, PRESETS, lstm
from rnn_research.layers import (GRU, LSTM, SimpleRNN, recurrence, regularization, run,
                                 run_bidirectional, sequence, tbptt)
from rnn_research.layers.options import segment_length

D, H, P = 3, 5, 3
T, B = 7, 3


def lstm_ref(cell, params, xs, *args, **options):
  paper = {k: np.asarray(v, np.float64) for k, v in lstm.to_paper(cell, params).items()}
  return reference.lstm(paper, cell.spec, xs, *args, **options)[0]


def random_options(cell, rng, lengths=None):
  """Resets [T, B] (a reset at t = 0 too), h_mask [B, out], 0/1 zoneout masks [T, B, w]."""
  resets = rng.random((T, B)) < 0.3
  h_mask = (rng.random((B, cell.output_size)) < 0.7) / 0.7
  keeps = tuple(jnp.asarray((rng.random((T, B, w)) < 0.4).astype(np.float64))
                for w in cell.zoneout_widths)
  return dict(resets=jnp.asarray(resets), h_mask=jnp.asarray(h_mask),
              zoneout=keeps if len(keeps) == 2 else keeps[0])


def batch_major(a):
  return None if a is None else np.swapaxes(np.asarray(a), 0, 1)


@pytest.mark.parametrize("name", ["lstm-V", "lstmp-NP", "gru", "gru-cho"])
def test_options_match_reference(name, rng):
  """Resets, recurrent dropout and zoneout (training masks) against the float64 reference."""
  cell = {"lstm-V": LSTMDef(D, H, PRESETS["V"]), "lstmp-NP": LSTMDef(D, H, PRESETS["NP"], P),
          "gru": GRUDef(D, H, True), "gru-cho": GRUDef(D, H, False)}[name]
  params = random_params(cell, rng, np.float64)
  xs = rng.standard_normal((B, T, D))
  carry0 = jax.tree.map(lambda c: rng.standard_normal(c.shape), cell.initial_carry((B,)))
  options = random_options(cell, rng)
  ys, _ = run(cell, params, jnp.asarray(xs), initial_carry=carry0, **{
      **options, "resets": batch_major(options["resets"])})
  common = dict(resets=batch_major(options["resets"]), h_mask=np.asarray(options["h_mask"]))
  if isinstance(cell, LSTMDef):
    keep_c, keep_h = map(batch_major, options["zoneout"])
    want = lstm_ref(cell, params, xs, carry0.c, carry0.h, keep_c=keep_c, keep_h=keep_h, **common)
  else:
    want = reference.gru(gru_weights(cell, params), xs, carry0, cell.reset_after,
                         keep_h=batch_major(options["zoneout"]), **common)[0]
  assert rel_err(ys, want) < 1e-12


def test_zoneout_at_evaluation_is_the_expected_update(rng):
  cell = LSTMDef(D, H, PRESETS["NP"])
  params = random_params(cell, rng, np.float64)
  xs = rng.standard_normal((B, T, D))
  rates = (0.3, 0.1)
  ys, _ = run(cell, params, jnp.asarray(xs),
              zoneout=tuple(jnp.full((1, 1, 1), r) for r in rates))
  keep_c, keep_h = (np.full((B, T, w), r) for r, w in zip(rates, cell.zoneout_widths))
  assert rel_err(ys, lstm_ref(cell, params, xs, keep_c=keep_c, keep_h=keep_h)) < 1e-12


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def clip_gradient(x, bound):
  return x


clip_gradient.defvjp(lambda x, bound: (x, None),
                     lambda bound, _, g: (jnp.clip(g, -bound, bound),))


def autodiff_recurrence(cell, params, xp, carry0, lengths, resets, h_mask, zoneout, grad_clip):
  """The options written out on a plain scan of the cell's step parts, differentiated by
  autodiff; the carry passed between steps goes through `clip_gradient`."""
  lstm_cell = isinstance(cell, LSTMDef)
  keeps = zoneout if lstm_cell else (zoneout,)

  def step(carry, inputs):
    xp_t, valid_t, reset_t, keep_t = inputs
    if grad_clip is not None:
      carry = jax.tree.map(lambda c: clip_gradient(c, grad_clip), carry)
    carry = jax.tree.map(lambda c0, c: jnp.where(reset_t[:, None], c0, c), carry0, carry)
    seen = carry._replace(h=carry.h * h_mask) if lstm_cell else carry * h_mask
    new, y = cell.pointwise(params, carry, xp_t, cell.recurrent_projections(params, seen))
    if lstm_cell:
      (keep_c, keep_h) = keep_t
      c = keep_c * carry.c + (1 - keep_c) * new.c
      y = keep_h * carry.h + (1 - keep_h) * new.h
      new = LSTMCarry(c, y, new.gates)
    else:
      new = y = keep_t[0] * carry + (1 - keep_t[0]) * new
    new = jax.tree.map(lambda a, b: jnp.where(valid_t[:, None], a, b), new, carry)
    return new, jnp.where(valid_t[:, None], y, 0)

  valid = jnp.arange(xp.shape[0])[:, None] < lengths[None, :]
  return jax.lax.scan(step, carry0, (xp, valid, resets & valid, keeps))


def without_input_weights(params):
  """What `recurrence` reads (it takes the input projection xp itself)."""
  return {k: v for k, v in params.items() if k != "W"}


@pytest.mark.parametrize("name, remat, grad_clip, lengths", [
    ("lstm-FGR", None, 0.05, (T, 4, 6)), ("gru-cho", 3, 0.02, (T, 4, 6)),
    # every sequence ends before T: the loop skips the last steps, and grad_clip clips
    # d final as those steps would
    ("lstm-FGR", None, 0.05, (4, 2, 3)), ("lstm-FGR", 4, 0.05, (4, 2, 3))])
def test_option_gradients_match_autodiff(name, remat, grad_clip, lengths, rng):
  """The custom backward with every option (lengths too) against autodiff of a plain scan
  over every step."""
  cell = {"lstm-FGR": LSTMDef(D, H, PRESETS["FGR"]), "gru-cho": GRUDef(D, H, False)}[name]
  params = without_input_weights(random_params(cell, rng, np.float64))
  xp = jnp.asarray(rng.standard_normal((T, B, cell.num_gates * H)))
  carry0 = jax.tree.map(lambda c: jnp.asarray(rng.standard_normal(c.shape)),
                        cell.initial_carry((B,)))
  lengths = jnp.array(lengths)
  options = random_options(cell, rng)
  weights = jnp.asarray(rng.standard_normal((T, B, cell.output_size)))

  def loss(runner, params, xp, carry0):
    final, ys = runner(params, xp, carry0)
    return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final))

  ours = lambda p, x, c: recurrence(cell, p, x, c, lengths, remat=remat, grad_clip=grad_clip,
                                    **options)
  plain = lambda p, x, c: autodiff_recurrence(cell, p, x, c, lengths, grad_clip=grad_clip,
                                              **options)
  got, want = jax.jit(lambda *args: [
      jax.value_and_grad(functools.partial(loss, f), (0, 1, 2))(*args) for f in (ours, plain)])(
          params, xp, carry0)
  assert rel_err(got[0], want[0]) < 1e-12
  for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
    assert rel_err(g, w) < 1e-11


def test_remat_segments():
  """"sqrt" takes a divisor of T near sqrt(T) (no padding) where there is one."""
  assert segment_length(100000, "sqrt") == 250
  assert segment_length(10000, "sqrt") == 100
  assert segment_length(7, "sqrt") == 3  # prime: ceil(sqrt(7)), padded
  assert segment_length(7, 50) == 7 and segment_length(7, None) is None


def test_neutral_options_give_todays_results_bitwise(rng):
  """No resets, an all-ones h_mask, zoneout keep 0 and a clip too large to act: the same outputs
  and gradients as without the options, bit for bit."""
  cell = LSTMDef(D, H, PRESETS["V"])
  params = without_input_weights(random_params(cell, rng, np.float64))
  xp = jnp.asarray(rng.standard_normal((T, B, 4 * H)))
  carry0 = cell.initial_carry((B,), jnp.float64)
  lengths = jnp.array([T, 2, 5])
  neutral = dict(resets=jnp.zeros((T, B), bool), h_mask=jnp.ones((B, H)),
                 zoneout=(jnp.zeros((T, B, H)), jnp.zeros((T, B, H))), grad_clip=1e300)

  def value_and_grad(**options):
    def loss(p, x):
      final, ys = recurrence(cell, p, x, carry0, lengths, **options)
      return jnp.sum(ys ** 2) + jnp.sum(final.c)
    return jax.jit(jax.value_and_grad(loss, (0, 1)))(params, xp)

  today = value_and_grad()
  for got, want in zip(jax.tree.leaves(value_and_grad(**neutral)), jax.tree.leaves(today)):
    assert np.array_equal(got, want)


def segments(resets_row, length):
  starts = [t for t in range(length) if t == 0 or resets_row[t]]
  return list(zip(starts, starts[1:] + [length]))


def test_resets_equal_running_the_segments_separately(rng):
  """Forward and gradient, with lengths and a random initial carry, one direction and both."""
  cell = LSTMDef(D, H, PRESETS["V"])
  params = random_params(cell, rng, np.float64)
  backward = random_params(cell, rng, np.float64)
  xs = jnp.asarray(rng.standard_normal((B, T, D)))
  resets = np.zeros((B, T), bool)
  resets[0, [2, 3, 6]] = resets[1, [0, 1]] = resets[2, [4, 6]] = True  # t = 6: past the length
  lengths = np.array([T, 3, 5])
  carry0 = jax.tree.map(lambda c: jnp.asarray(rng.standard_normal(c.shape)),
                        cell.initial_carry((B,)))
  weights = jnp.asarray(rng.standard_normal((B, T, 2 * H)))

  def packed(params, backward, xs):
    ys, _ = run_bidirectional(cell, params, backward, xs, initial_carry=(carry0, carry0),
                              lengths=jnp.asarray(lengths), resets=jnp.asarray(resets))
    return jnp.sum(ys * weights), ys

  def separate(params, backward, xs):
    total, rows = 0.0, []
    for b in range(B):
      row = jnp.zeros((T, 2 * H))
      c0 = jax.tree.map(lambda c: c[b:b + 1], carry0)
      for s, e in segments(resets[b], lengths[b]):
        ys, _ = run_bidirectional(cell, params, backward, xs[b:b + 1, s:e],
                                  initial_carry=(c0, c0))
        row = row.at[s:e].set(ys[0])
      total = total + jnp.sum(row * weights[b])
      rows.append(row)
    return total, jnp.stack(rows)

  (loss, ys), grads = jax.jit(jax.value_and_grad(packed, (0, 1, 2), has_aux=True))(
      params, backward, xs)
  (want_loss, want_ys), want = jax.jit(jax.value_and_grad(separate, (0, 1, 2), has_aux=True))(
      params, backward, xs)
  assert rel_err(ys, want_ys) < 1e-12 and rel_err(loss, want_loss) < 1e-12
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    assert rel_err(g, w) < 1e-12


def test_grad_clip_bounds_the_carry_cotangent_and_leaves_the_forward(rng):
  cell = GRUDef(D, H)
  params = random_params(cell, rng, np.float64, scale=1.5)
  xp = jnp.asarray(rng.standard_normal((T, B, 3 * H)))
  carry0 = jnp.asarray(rng.standard_normal((B, H)))

  def loss(c0, clip):
    final, ys = recurrence(cell, params, xp, c0, grad_clip=clip)
    return 10.0 * jnp.sum(ys) + jnp.sum(final), ys

  both = jax.jit(lambda c0: [jax.value_and_grad(loss, has_aux=True)(c0, clip)
                             for clip in (0.1, None)])
  ((value, ys), d_carry0), ((value_free, ys_free), d_free) = both(carry0)
  assert np.array_equal(ys, ys_free) and value == value_free
  assert np.abs(d_free).max() > 0.1 and np.abs(d_carry0).max() <= 0.1


def test_layer_with_every_option_off_is_todays_layer(rng):
  xs = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
  today = LSTM(D, H, bidirectional=True, variant="V", rngs=nnx.Rngs(0))
  off = LSTM(D, H, bidirectional=True, variant="V", input_dropout=0.0,
             recurrent_dropout=0.0, weight_dropout=0.0, zoneout_c=0.0, zoneout_h=0.0,
             remat=None, grad_clip=None, cell_clip=None, num_heads=1, rngs=nnx.Rngs(0))
  assert off.masks is None
  state, state_off = nnx.state(today), nnx.state(off)
  assert jax.tree.structure(state) == jax.tree.structure(state_off)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state),
                                                  jax.tree.leaves(state_off)))
  call = nnx.jit(lambda model, xs: model(xs)[0])  # one graph: one compilation
  assert np.array_equal(call(today, xs), call(off, xs))


def test_mask_statistics(rng):
  """Rates within binomial tolerance (5 sigma), h and input masks one per sequence (shared over
  time by construction: [B, width]), zoneout masks per step, DropConnect only on R, R_*."""
  rates = regularization.Rates(input=0.3, recurrent=0.4, weight=0.5, zoneout_c=0.2,
                               zoneout_h=0.1)
  masks = regularization.RecurrentDropout(rates, rngs=nnx.Rngs(dropout=3))
  cell = LSTMDef(8, 64, PRESETS["FGR"])
  params = random_params(cell, rng, np.float32)

  def check_rate(values, rate):
    n = values.size
    assert abs(np.mean(values) - rate) < 5 * np.sqrt(rate * (1 - rate) / n)

  dropped, options = masks(cell, params, 50, 64, jnp.float32)
  h_mask, (keep_c, keep_h) = np.asarray(options["h_mask"]), map(np.asarray, options["zoneout"])
  assert h_mask.shape == (64, 64) and set(np.unique(h_mask)) == {0.0, np.float32(1 / 0.6)}
  check_rate(h_mask == 0, 0.4)
  assert keep_c.shape == (50, 64, 64) and set(np.unique(keep_c)) == {0.0, 1.0}
  check_rate(keep_c, 0.2), check_rate(keep_h, 0.1)
  assert not np.array_equal(keep_c[0], keep_c[1])  # drawn afresh every step
  for name in ("R", "R_gates"):
    kept = np.asarray(dropped[name]) != 0
    check_rate(~kept, 0.5)
    assert np.allclose(np.asarray(dropped[name])[kept], 2 * np.asarray(params[name])[kept])
  assert all(np.array_equal(dropped[k], params[k]) for k in ("W", "b", "p_i"))
  input_mask = np.asarray(masks.input_mask(256, 32, jnp.float32))
  check_rate(input_mask == 0, 0.3)
  again, options_again = masks(cell, params, 50, 64, jnp.float32)
  assert not np.array_equal(options_again["h_mask"], h_mask)  # a new draw per call
  assert not np.array_equal(again["R"], dropped["R"])


def test_layer_uses_the_masks_it_draws_in_training_and_none_in_evaluation(rng):
  """The layer's training output is `run` with the masks drawn from the same rng state (input
  mask shared over time); in evaluation it is `run` with zoneout's expected update."""
  options = dict(input_dropout=0.3, recurrent_dropout=0.3, weight_dropout=0.3, zoneout_c=0.3,
                 zoneout_h=0.2)
  model = LSTM(D, H, variant="V", rngs=nnx.Rngs(0, dropout=7), **options)
  xs = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
  cell = model.layers[0][0]
  call = lambda model, xs: model(xs)[0]
  twin = nnx.clone(model)  # the same rng state: it draws the masks the model draws
  ys = call(model, xs)
  params, drawn = twin.masks(cell.definition, cell.params, T, B, jnp.float32)
  input_mask = twin.masks.input_mask(B, D, jnp.float32)
  want, _ = run(cell.definition, params, xs * input_mask[:, None], **drawn)
  assert rel_err(ys, want) < 1e-6
  assert not np.array_equal(call(model, xs), ys)  # fresh masks per call

  model.eval()
  ys_eval = call(model, xs)
  want_eval, _ = run(cell.definition, cell.params, xs,
                     zoneout=(jnp.full((1, 1, 1), 0.3), jnp.full((1, 1, 1), 0.2)))
  assert rel_err(ys_eval, want_eval) < 1e-6
  model.train()
  assert not np.array_equal(call(model, xs), ys_eval)


def test_layer_passes_its_options_to_the_backend(monkeypatch, rng):
  """The layer's options reach the backend as one checked value, unset ones as None."""
  seen = []
  run_backend = sequence._recurrence  # pylint: disable=protected-access

  def recording(backend, cell, params, xp, carry0, lengths, unroll, checked):
    seen.append(sorted(k for k, v in vars(checked).items() if v is not None))
    return run_backend(backend, cell, params, xp, carry0, lengths, unroll, checked)

  monkeypatch.setattr(sequence, "_recurrence", recording)
  model = GRU(D, H, bidirectional=True, recurrent_dropout=0.2, zoneout_h=0.1, remat="sqrt",
              grad_clip=1.0, rngs=nnx.Rngs(0))
  resets = jnp.asarray(rng.random((B, T)) < 0.2)
  trace = lambda model, **kwargs: nnx.eval_shape(  # traced, not compiled
      lambda m: m(jnp.ones((B, T, D)), **kwargs), model)
  trace(model, resets=resets)
  assert seen == [["grad_clip", "h_mask", "keeps", "remat", "resets"]] * 2
  seen.clear()
  trace(GRU(D, H, rngs=nnx.Rngs(0)))
  assert seen == [[]]


def test_time_major_resets(rng):
  model = SimpleRNN(D, H, rngs=nnx.Rngs(0))
  tm = SimpleRNN(D, H, time_major=True, rngs=nnx.Rngs(0))
  xs = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
  resets = jnp.asarray(rng.random((B, T)) < 0.3)
  ys, _ = model(xs, resets=resets)
  ys_tm, _ = tm(jnp.swapaxes(xs, 0, 1), resets=resets.T)
  assert np.array_equal(ys, jnp.swapaxes(ys_tm, 0, 1))


def apply(cell):
  return lambda params, xs, carry: run(cell, params, xs, initial_carry=carry)


def test_tbptt_carry_crosses_chunks_and_gradient_reaches_back_k2_steps(rng):
  cell = LSTMDef(D, H, PRESETS["NP"])
  params = random_params(cell, rng, np.float64)
  xs = jnp.asarray(rng.standard_normal((2, 8, D)))
  targets = jnp.asarray(rng.standard_normal((2, 8, H)))
  loss_fn = lambda ys, tg: jnp.sum(ys * tg)
  chunks = tbptt.chunks(8, 3, 5)
  assert [c.begin for c in chunks] == [0, 3, 6] and [c.start for c in chunks] == [0, 1, 3]

  def chunk_losses(xs):
    carry, losses = cell.initial_carry((2,), jnp.float64), []
    for chunk in chunks:
      loss, carry = tbptt.chunk_loss(apply(cell), loss_fn, params, carry, xs, targets, chunk)
      losses.append(loss)
    return jnp.stack(losses)

  @jax.jit
  def check(xs):
    return (jnp.sum(chunk_losses(xs)), loss_fn(run(cell, params, xs)[0], targets),
            jax.jacrev(chunk_losses)(xs))

  total, full, jacobian = check(xs)
  assert rel_err(total, full) < 1e-12  # the carry moved on across chunks
  reach = np.abs(np.asarray(jacobian)).sum(axis=(1, 3))  # [chunk, T]
  for j, chunk in enumerate(chunks):
    assert np.all(reach[j, :chunk.start] == 0) and np.all(reach[j, chunk.start:chunk.stop] > 0)
    assert np.all(reach[j, chunk.stop:] == 0)


def test_tbptt_with_k2_beyond_the_sequence_is_full_bptt(rng):
  cell = GRUDef(D, H)
  params = random_params(cell, rng, np.float64)
  xs = jnp.asarray(rng.standard_normal((2, 8, D)))
  targets = jnp.asarray(rng.standard_normal((2, 8, H)))
  loss_fn = lambda ys, tg: jnp.sum(jnp.sin(ys) * tg)

  @jax.jit
  def check(params):
    carry, total = cell.initial_carry((2,), jnp.float64), None
    for chunk in tbptt.chunks(8, 3, 8):
      (_, carry), grads = tbptt.chunk_value_and_grad(apply(cell), loss_fn, params, carry, xs,
                                                     targets, chunk)
      total = grads if total is None else jax.tree.map(jnp.add, total, grads)
    return total, jax.grad(lambda p: loss_fn(run(cell, p, xs)[0], targets))(params)

  total, want = check(params)
  for name in want:
    assert rel_err(total[name], want[name]) < 1e-12


@pytest.mark.parametrize("call, message", [
    (lambda: LSTM(D, H, recurrent_dropout=1.0, rngs=nnx.Rngs(0)),
     r"recurrent_dropout must be in \[0, 1\)"),
    (lambda: LSTM(D, H, zoneout_h=-0.1, rngs=nnx.Rngs(0)), r"zoneout_h must be in \[0, 1\)"),
    (lambda: GRU(D, H, zoneout_c=0.1, rngs=nnx.Rngs(0)), "zoneout_c acts on the LSTM's cell"),
    (lambda: GRU(D, H, remat=0, rngs=nnx.Rngs(0)), "remat must be None, a positive int or"),
    (lambda: GRU(D, H, grad_clip=-1.0, rngs=nnx.Rngs(0)), "grad_clip must be None or a float"),
    (lambda: GRU(D, H, rngs=nnx.Rngs(0))(jnp.ones((B, T, D)), resets=jnp.ones((T, B), bool)),
     r"resets must be bool of shape \[batch, time\]=\(3, 7\)"),
    (lambda: run(GRUDef(D, H), GRUDef(D, H).init_params(jax.random.key(0)), jnp.ones((B, T, D)),
                 resets=jnp.ones((B, T))), "resets must be bool"),
    (lambda: recurrence(GRUDef(D, H), GRUDef(D, H).init_params(jax.random.key(0)),
                        jnp.ones((T, B, 3 * H)), jnp.zeros((B, H)), h_mask=jnp.ones((B, 1))),
     r"h_mask must be float of shape \[batch, output_size\]=\(3, 5\)"),
    (lambda: recurrence(GRUDef(D, H), GRUDef(D, H).init_params(jax.random.key(0)),
                        jnp.ones((T, B, 3 * H)), jnp.zeros((B, H)), zoneout=(None, None)),
     "zoneout must be None or one array keep_h"),
    (lambda: recurrence(LSTMDef(D, H), LSTMDef(D, H).init_params(jax.random.key(0)),
                        jnp.ones((T, B, 4 * H)), LSTMDef(D, H).initial_carry((B,)),
                        zoneout=(jnp.ones((T, 2, H)), None)),
     r"zoneout weights must be float and broadcast to \[time, batch, width\]"),
    (lambda: tbptt.chunks(10, 4, 2), "k2 .* must be >= k1"),
    (lambda: recurrence(GRUDef(D, H), GRUDef(D, H).init_params(jax.random.key(0)),
                        jnp.ones((T, B, 3 * H)), jnp.zeros((B, H)), remat="log"),
     "remat must be None, a positive int or 'sqrt'"),
])
def test_bad_values(call, message):
  with pytest.raises(ValueError, match=message):
    call()
