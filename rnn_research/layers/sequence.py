"""Running a cell over whole sequences: input checks, batch-/time-major, variable lengths,
state resets, reverse and bidirectional. Pure functions of (cell, params, inputs).

Shapes: xs [B, T, D] batch-first (or [T, B, D] with time_major=True); lengths [B] ints in [1, T];
resets [B, T] bool (or [T, B]), True at the first step of each new segment.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnn_research.cells.base import CellDef
from rnn_research.layers import options
from rnn_research.layers.scan import scan

BACKENDS = ("scan", "pallas", "auto", "cudnn")


def check_backend(backend: str) -> None:
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def recurrence(cell: CellDef, params, xp, carry0, lengths=None, unroll: int = 1, *,
               backend: str = "scan", resets=None, h_mask=None, zoneout=None,
               grad_clip: float | None = None, remat=None, **kernel_options):
  """Runs the recurrence of `cell` over precomputed input projections on `backend`.

  Args:
    cell, params: the cell definition and its parameters.
    xp: [T, B, width] `cell.input_projection` of the inputs.
    carry0: the carry at t = 0 (leaves [B, ...]).
    lengths: optional int [B]; steps t >= lengths[b] leave sequence b's carry unchanged and
      output zeros.
    unroll: steps per loop iteration of the scan (the kernels loop inside).
    backend: "scan", "pallas" or "auto" (see `resolve_backend`); "cudnn" runs whole sequences
      only (`run`).
    resets: optional bool [T, B]; where set, the carry entering step t is carry0 (packed
      sequences, episode boundaries). Ignored past a sequence's length.
    h_mask: optional float [B, output_size]: h ⊙ h_mask is what the recurrent weights multiply
      (variational dropout, one mask per sequence, 1/(1-p) inside); carry and outputs unmasked.
      Matmuls inside the gate math (the Cho GRU's R_n, MGU, MUT) and FGR's gate recurrence
      see the carry unmasked.
    zoneout: optional keep weights, each None or float broadcastable to [T, B, width]: a pair
      (keep_c, keep_h) for the LSTM (widths hidden_size, output_size), one array keep_h for
      single-state cells. 0/1 masks drawn per step in training; the rate itself at evaluation.
    grad_clip: optional float > 0: the carry cotangent passed from step t to t-1 is clipped to
      [-grad_clip, grad_clip]. Forward unchanged.
    remat: None, an int k >= 1 or "sqrt": keep every k-th carry (k near sqrt(T)) and recompute
      inside the backward pass; the same gradients in O(T/k + k) carries of memory (the
      kernels keep only the state sequence anyway and ignore it).
    **kernel_options: the kernels' own (`kernels.rnn.recurrence`: platform, interpret, impl,
      block sizes), with backend "pallas".

  No gradient flows to resets, h_mask or the zoneout weights (they are masks).

  Returns:
    (final carry, ys [T, B, out]).
  """
  checked = options.check(cell, xp.shape[0], xp.shape[1], lengths, resets=resets,
                          h_mask=h_mask, zoneout=zoneout, grad_clip=grad_clip, remat=remat)
  return _recurrence(backend, cell, params, xp, carry0, lengths, unroll, checked,
                     **kernel_options)


def resolve_backend(backend: str, cell: CellDef) -> str:
  """"scan" or "pallas" for `backend`: "pallas" runs the kernels (interpreted on a CPU), "auto"
  runs them on GPU/TPU where they support the cell and the scan elsewhere (and where a call's
  size does not fit them: `kernels.rnn.Unsupported`). "cudnn" projects
  the inputs itself, so it has no recurrence over input projections: ValueError."""
  check_backend(backend)
  if backend == "cudnn":
    raise ValueError("backend='cudnn' runs whole sequences (run, run_bidirectional, the "
                     "layers), since cuDNN projects the inputs itself; recurrence takes input "
                     "projections: use backend='scan', 'pallas' or 'auto' here")
  if backend == "auto":
    from kernels import rnn  # Pallas is imported only when a kernel backend is asked for
    return "pallas" if rnn.supports(cell) else "scan"
  return backend


def _recurrence(backend: str, cell: CellDef, params, xp, carry0, lengths, unroll: int,
                checked: options.Options, **kernel_options):
  if resolve_backend(backend, cell) == "scan":
    if kernel_options:
      raise ValueError(f"{sorted(kernel_options)} are options of the kernels, not of "
                       f"backend={backend!r}")
    return scan(cell, params, xp, carry0, lengths, unroll, checked)
  from kernels import platforms, rnn  # pylint: disable=g-import-not-at-top
  try:
    return rnn.recurrence(cell, params, xp, carry0, lengths, checked, **kernel_options)
  except rnn.Unsupported as error:
    if backend != "auto":
      raise
    platforms.log_once(f"{error}: backend='auto' runs the scan instead.")
    return scan(cell, params, xp, carry0, lengths, unroll, checked)


def check_inputs(xs, in_features: int, time_major: bool) -> None:
  layout = "[time, batch, features]" if time_major else "[batch, time, features]"
  if xs.ndim != 3:
    raise ValueError(f"xs must be {layout}, got shape {tuple(xs.shape)}")
  if xs.shape[-1] != in_features:
    raise ValueError(f"xs must have in_features={in_features} features in its last axis, "
                     f"got shape {tuple(xs.shape)}")
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    raise ValueError(f"xs must be floating point, got {xs.dtype}")
  if 0 in xs.shape[:2]:
    raise ValueError(f"xs must have at least one batch entry and one step, got shape "
                     f"{tuple(xs.shape)}")


def check_lengths(lengths, batch: int, num_steps: int):
  """Returns lengths as int32 [B] (or None); values are checked when they are concrete."""
  if lengths is None:
    return None
  lengths = jnp.asarray(lengths)
  if lengths.shape != (batch,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise ValueError(f"lengths must be integers of shape [batch]=({batch},), "
                     f"got {lengths.dtype} of shape {tuple(lengths.shape)}")
  if not isinstance(lengths, jax.core.Tracer):
    values = np.asarray(lengths)
    if values.min() < 1 or values.max() > num_steps:
      raise ValueError(f"lengths must lie in [1, time={num_steps}], got min {values.min()} "
                       f"and max {values.max()}")
  return lengths.astype(jnp.int32)


def check_carry(carry, expected, argument: str = "initial_carry") -> None:
  """Raises ValueError unless `carry` has the structure and shapes of `expected`."""
  if jax.tree.structure(carry) != jax.tree.structure(expected):
    raise ValueError(f"{argument} must have the structure {jax.tree.structure(expected)}, "
                     f"got {jax.tree.structure(carry)}")
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected)):
    if tuple(got.shape) != tuple(want.shape):
      raise ValueError(f"{argument} leaves must have shapes "
                       f"{[tuple(w.shape) for w in jax.tree.leaves(expected)]}, got shape "
                       f"{tuple(got.shape)}")


def time_major_resets(resets, batch: int, num_steps: int, time_major: bool):
  """resets [B, T] (or [T, B] if time_major) -> [T, B] (or None); a shape that fits neither
  layout is named in the batch-major form the caller used."""
  if resets is None:
    return None
  resets = jnp.asarray(resets)
  if time_major:
    return resets
  if resets.ndim != 2 or resets.shape != (batch, num_steps):
    raise ValueError(f"resets must be bool of shape [batch, time]=({batch}, {num_steps}), got "
                     f"{resets.dtype} of shape {tuple(resets.shape)}")
  return resets.T


def reverse_resets(resets, lengths):
  """The resets of the reverse run of time-major resets [T, B]. A segment [s, e] of a sequence
  of length L runs in reverse as steps [L-1-e, L-1-s]; it begins where the forward run's next
  segment begins one step later, so the reverse run resets at step t' iff resets[L - t']."""
  later = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)  # resets[t + 1]
  return reverse_sequences(later, lengths)


def reverse_sequences(xs, lengths):
  """Reverses each sequence's valid span in time-major xs [T, B, ...]; padding stays at the end."""
  if lengths is None:
    return jnp.flip(xs, axis=0)
  t = jnp.arange(xs.shape[0])[:, None]
  index = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
  index = index.reshape(index.shape + (1,) * (xs.ndim - 2))
  return jnp.take_along_axis(xs, index, axis=0)


def run(cell: CellDef, params, xs, *, initial_carry=None, lengths=None, reverse: bool = False,
        time_major: bool = False, unroll: int = 1, backend: str = "scan", resets=None,
        **recurrence_options):
  """Runs `cell` over `xs`.

  Args:
    cell, params: the cell definition and its parameters.
    xs: [B, T, D], or [T, B, D] if time_major.
    initial_carry: the carry at the first step (default all zeros), e.g. the final carry of
      the previous chunk for truncated BPTT.
    lengths: optional int [B]; steps past a sequence's end leave its carry unchanged and
      output zeros, so the final carry is the carry at each sequence's own end.
    reverse: run from each sequence's last valid step back to its first; outputs stay aligned
      with the inputs.
    unroll: time steps per scan iteration.
    backend: "scan", "pallas" or "auto" (see `resolve_backend`), or "cudnn": cuDNN's LSTM on
      NVIDIA GPUs, for the NP LSTM in float32 without resets, h_mask, zoneout or grad_clip
      (`layers.cudnn`).
    resets: optional bool [B, T] ([T, B] if time_major): the carry entering a marked step is
      initial_carry again, so packed sequences run as if each segment ran alone. With reverse,
      each segment runs backwards from its own last step.
    **recurrence_options: h_mask, zoneout, grad_clip, remat of `recurrence` (the masks indexed
      by the recurrence's steps: zoneout weights are time-major [T, B, width], in the order
      the run visits the steps).

  Returns:
    (ys [B, T, out] (or [T, B, out]), final carry).
  """
  check_backend(backend)
  check_inputs(xs, cell.in_features, time_major)
  if not time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  num_steps, batch = xs.shape[:2]
  lengths = check_lengths(lengths, batch, num_steps)
  resets = time_major_resets(resets, batch, num_steps, time_major)
  dtype = jnp.result_type(xs, *jax.tree.leaves(params))
  default_carry = cell.initial_carry((batch,), dtype)
  if initial_carry is None:
    initial_carry = default_carry
  else:
    check_carry(initial_carry, default_carry)
    initial_carry = jax.tree.map(lambda c: jnp.asarray(c, dtype), initial_carry)
  checked = options.check(cell, num_steps, batch, lengths, resets=resets, **recurrence_options)
  if reverse:
    xs = reverse_sequences(xs, lengths)
    if checked.resets is not None:
      checked = dataclasses.replace(checked, resets=reverse_resets(checked.resets, lengths))
  if backend == "cudnn":
    from rnn_research.layers import cudnn  # jax.experimental.rnn only when asked for
    final, ys = cudnn.lstm(cell, params, xs, initial_carry, lengths, checked)
  else:
    xp = cell.input_projection(params, xs)
    final, ys = _recurrence(backend, cell, params, xp, initial_carry, lengths, unroll, checked)
  if reverse:
    ys = reverse_sequences(ys, lengths)
  return (ys if time_major else jnp.swapaxes(ys, 0, 1)), final


def run_bidirectional(cell: CellDef, params_forward, params_backward, xs, *, initial_carry=None,
                      lengths=None, time_major: bool = False, unroll: int = 1,
                      backend: str = "scan", resets=None, options_forward=None,
                      options_backward=None, **options):
  """A forward and a reverse run of `cell`; outputs concatenated [..., 2·out] (forward first).

  initial_carry and the returned final carry are (forward carry, backward carry). resets
  mark segment starts in the inputs' order (see `run`); the reverse run restarts at each
  segment's last step. options go to both runs, options_forward / options_backward (dicts,
  e.g. each direction's own dropout masks) to one.
  """
  carry_forward, carry_backward = (None, None) if initial_carry is None else initial_carry
  shared = dict(options, lengths=lengths, time_major=time_major, unroll=unroll,
                backend=backend, resets=resets)
  ys_f, final_f = run(cell, params_forward, xs, initial_carry=carry_forward,
                      **shared, **(options_forward or {}))
  ys_b, final_b = run(cell, params_backward, xs, initial_carry=carry_backward, reverse=True,
                      **shared, **(options_backward or {}))
  return jnp.concatenate([ys_f, ys_b], axis=-1), (final_f, final_b)
