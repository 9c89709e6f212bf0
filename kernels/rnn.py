"""The kernels' entry point, the "pallas" backend of `rnn_research.layers.recurrence`:

    recurrence(cell, params, xp, carry0, lengths, options) -> (final carry, ys [T, B, out])

It packs the library's params and the options into the kernels' layout (padded to the
platform's tiles; with head-wise recurrence each head padded on its own), runs the
whole-sequence kernel, or where the recurrent weights one program holds (a head's blocks,
with heads) do not fit on chip, the persistent kernel (`persistent`: NVIDIA GPUs, R split
over many thread blocks) where it supports the cell and its shared memory fits (the options'
tiles included), else the step kernel in a scan (the choice logged once), and unpacks.
Gradients reach the library params through the packing, which is plain jnp.
"""
import jax
import jax.numpy as jnp

from kernels import autodiff, persistent, platforms, programs, sequence, step

IMPLS = ("sequence", "persistent", "step")


class Unsupported(ValueError):
  """The kernels cannot run this call (backend="auto" runs the scan instead)."""


def supports(cell, platform: str | None = None) -> bool:
  """Whether backend="auto" should run `cell` on the kernels here: any cell that declares its
  gate math on per-gate blocks (every cell of `rnn_research.cells`, any option), on gpu or tpu,
  on gpu if the matrices inside its gate math (LSTMP's P, R_n, ...) fit one program or the
  persistent kernel splits them (Cho's R_n; a call whose size it cannot run raises
  `Unsupported`). The kernels run every option of the recurrence, so the options never
  decide."""
  try:
    program = programs.program_for(cell)
  except ValueError:
    return False
  platform = platforms.default_platform() if platform is None else platform
  return platforms.supported_platform(platform) and (
      platform != "gpu" or _inner_matrices_fit(platforms.Target("gpu"), program)
      or persistent.unsupported(program) is None)


def _inner_matrix_bytes(target: platforms.Target, program: programs.Program) -> int:
  """Bytes of the matrices inside the gate math (LSTMP's P, R_n, ...), which every kernel
  program holds whole, padded, in f32."""
  return sum(4 * target.hidden_size(shape[0]) * target.hidden_size(shape[1])
             for shape in program.small_shapes().values() if len(shape) == 2)


def _inner_matrices_fit(target: platforms.Target, program: programs.Program) -> bool:
  return target.platform != "gpu" or target.fits(_inner_matrix_bytes(target, program))


def _check_inner_matrices(target: platforms.Target, program: programs.Program,
                          persistent_why: str) -> None:
  """Unsupported where the kernels but the persistent one cannot hold the matrices inside
  the gate math, and the persistent kernel cannot run the call (`persistent_why`)."""
  if not _inner_matrices_fit(target, program):
    cell = program.cell
    raise Unsupported(
        f"hidden_size={cell.hidden_size} is too large for the Pallas kernels on gpu: the "
        f"matrices inside {type(cell).__name__}'s gate math (LSTMP's P, R_n, ...) take "
        f"{_inner_matrix_bytes(target, program)} bytes in f32, more than the "
        f"{target.weight_budget} one kernel program may hold, and the persistent kernel "
        f"cannot run it ({persistent_why}); use backend='scan' (or 'auto')")


def _weight_bytes(program: programs.Program, packed: programs.Packed) -> int:
  """Bytes of the weights one program of the whole-sequence kernel holds (a head's blocks)."""
  return sum(a.size * a.dtype.itemsize for a in (*packed.weights, *packed.small)) // program.heads


def _step_bytes(program: programs.Program, packed: programs.Packed, block_b: int, keeps,
                resets) -> int:
  """Bytes one time step of one batch block streams through one program of the backward
  sequence kernel: xp in and d xp out, the entering states and their cotangents in (f32),
  the zoneout weights and the reset flags (a [bb, 1] block pads to 128 lanes on TPU)."""
  _, g, _, n = packed.xp.shape
  widths = [s.shape[-1] for s in packed.states0]
  keep_width = sum(w for k, w in zip(keeps or (), widths) if k is not None)
  per_row = 2 * g * n * packed.xp.dtype.itemsize + (2 * sum(widths) + keep_width) * 4
  return block_b * (per_row // program.heads + (512 if resets is not None else 0))


def choose_impl(target: platforms.Target, cell, program: programs.Program,
                packed: programs.Packed, persistent_why: str | None) -> str:
  """The whole-sequence kernel where the weights fit on chip, else the persistent kernel where
  it can run (`persistent_why` is None), else the step kernel."""
  size = _weight_bytes(program, packed)
  if target.fits(size):
    return "sequence"
  budget = (f"the recurrent weights of {type(cell).__name__}(hidden_size={cell.hidden_size}) "
            f"take {size} bytes, more than the {target.weight_budget} the whole-sequence kernel "
            f"may keep on chip on {_where(target)}")
  if persistent_why is None:
    platforms.log_once(f"Pallas: {budget}; running the persistent kernel (R split over "
                       f"thread blocks) instead.")
    return "persistent"
  reason = f" (the persistent kernel cannot: {persistent_why})" if target.platform == "gpu" else ""
  platforms.log_once(f"Pallas: {budget}; running the step kernel in a scan instead{reason}.")
  return "step"


def _where(target: platforms.Target) -> str:
  return f"tpu {target.chip}" if target.platform == "tpu" else target.platform


def _num_sms() -> int:
  """Streaming multiprocessors of the first device (an H100's where none says: lowering
  without a GPU)."""
  return getattr(jax.devices()[0], "core_count", None) or persistent.H100_SMS


def _persistent_plan(target: platforms.Target, program: programs.Program, batch: int, w_dtype,
                     xp_dtype, fused: persistent.Fused, lengths) -> tuple[int, str | None]:
  """(cluster size, None) where the persistent kernel can run this call, else (0, why not)."""
  if target.platform not in ("gpu", "cpu"):
    return 0, "it runs on NVIDIA GPUs only"
  if target.platform == "gpu" and target.interpret:
    return 0, "it is interpreted only on the cpu platform (as one cluster)"
  why = persistent.unsupported(program)
  if why is not None:
    return 0, why
  if target.platform == "cpu":  # GPU interpret mode: one cluster of 2 CTAs (or 1)
    return 2 if program.cell.hidden_size % 32 == 0 else 1, None
  return persistent.plan(program, program.cell.hidden_size, batch, w_dtype, xp_dtype,
                         lengths is not None, fused, _num_sms())


def _fused(options) -> persistent.Fused:
  """The options a call fuses into the persistent kernels."""
  modes = tuple(None if keep is None else "const" if _is_constant(_keep_rows(keep)) else "step"
                for keep in options.keeps or ())
  return persistent.Fused(options.resets is not None, options.h_mask is not None, modes)


def _persistent_config(target, program, padded_n, cluster, block_b, grad_clip, interpret,
                       backward_why):
  """The persistent kernels' config; on the cpu the interpretable form (one cluster, races
  detected). Where the backward kernel does not fit (`backward_why`), the step kernel runs the
  backward, logged."""
  backward, wide = None, 0
  if backward_why is not None:
    wide = platforms.Target("gpu").hidden_size(padded_n)
    backward = step.StepConfig(program, target, block_b, min(wide, step.GPU_HIDDEN_BLOCK),
                               grad_clip)
    platforms.log_once(f"Pallas: the step kernel runs the persistent kernel's backward in a "
                       f"scan ({backward_why}).")
  if target.platform == "cpu":
    from jax.experimental.pallas import mosaic_gpu as plgpu
    if not isinstance(interpret, plgpu.InterpretGPUParams):
      interpret = plgpu.InterpretGPUParams(detect_races=True)
    return persistent.PersistentConfig(program, padded_n, cluster, grad_clip, backward, wide,
                                       barrier="cluster", interpret=interpret)
  return persistent.PersistentConfig(program, persistent.UNITS, cluster, grad_clip, backward,
                                     wide)


def _padded_sizes(target: platforms.Target, program: programs.Program) -> tuple[int, int]:
  """(padded hidden, padded output): with head programs every head pads to the lane tile."""
  cell = program.cell
  if program.heads > 1:
    padded = program.heads * target.hidden_size(cell.hidden_size // program.heads)
    return padded, padded
  return target.hidden_size(cell.hidden_size), target.hidden_size(cell.output_size)


def _extras(program, layout, resets, h_mask, keeps, lengths_k, shape, padded_shape):
  """The options in the kernels' layout: time and batch `shape` padded to `padded_shape`."""
  if resets is not None:
    resets = programs.pad_to(resets.astype(jnp.int32), padded_shape)[..., None]
  if h_mask is not None:
    h_mask = programs.pad_to(layout.lanes(h_mask.astype(jnp.float32), h_mask.shape[-1]),
                             (padded_shape[1], layout.padded_ny))
  if keeps is not None:
    num_states = len(program.state_widths(1, 1))
    keeps = tuple(_keep_layout(program, layout, keeps[k], k, shape, padded_shape)
                  if k < len(keeps) and keeps[k] is not None else None
                  for k in range(num_states))
  return autodiff.Extras(lengths_k, resets, h_mask, keeps)


def _keep_rows(keep):
  """Zoneout weights as given (up to [T|1, B|1, w|1]) -> f32 [T|1, B|1, w|1]."""
  keep = jnp.asarray(keep, jnp.float32)
  return keep.reshape((1,) * (3 - keep.ndim) + keep.shape)


def _is_constant(keep) -> bool:
  """Whether zoneout weights [T|1, B|1, w|1] are the same at every step and row."""
  return keep.shape[:2] == (1, 1)


def _keep_layout(program, layout, keep, k, shape, padded_shape):
  """Zoneout weights of state k: one row [1, w] when they do not vary over time and batch,
  else [T, B, w] (the padding keeps 0: the new state)."""
  keep = _keep_rows(keep)
  width = program.state_widths(layout.n, layout.ny)[k]
  if _is_constant(keep):
    return program.lanes_of_state(layout, jnp.broadcast_to(keep[0], (1, width)), k)
  keep = program.lanes_of_state(layout, jnp.broadcast_to(keep, (*shape, width)), k)
  return programs.pad_to(keep, (*padded_shape, keep.shape[-1]))


def recurrence(cell, params, xp, carry0, lengths, options, *,
               platform: str | None = None, interpret=None, chip: str | None = None,
               impl: str | None = None,
               block_b: int | None = None, block_t: int | None = None,
               block_n: int | None = None):
  """Runs the recurrence on the Pallas kernels (the "pallas" backend of
  `rnn_research.layers.recurrence`, which documents the options).

  Args:
    cell, params, xp, carry0, lengths: as the library's recurrence: xp [T, B, width] the input
      projection, carry0 the carry at t = 0, lengths None or int [B].
    options: the checked `rnn_research.layers.options.Options`: resets [T, B] (already off
      past each row's length), h_mask [B, out], keeps per zoneout state (None or [T|1, B|1,
      w|1]; ones constant over time and batch are passed once, not per step), grad_clip.
      remat is ignored: the kernels' backward already keeps only the state sequence and
      recomputes the gates, and the recurrent weights' gradients are one matmul after it.
    platform: "gpu", "tpu" or "cpu" (default: JAX's default backend).
    interpret: True / `pltpu.InterpretParams` to interpret (default: only on the cpu).
    chip: the TPU generation ("v4", "v5e", "v5p", "v6e", "7x"), which sizes the VMEM
      budgets (default: the device's; v4, the smallest, where there is none).
    impl: "sequence", "persistent" or "step" (default: "sequence" where the weights fit on
      chip, else "persistent" where it can run, else "step"); "persistent" on the cpu runs
      its one-cluster form in GPU interpret mode (races detected), whose CTAs each hold one of
      XLA's CPU threads: with fewer cores than CTAs + 2, set PJRT_NPROC (tests/conftest.py).
    block_b, block_t, block_n: batch, time (sequence kernel) and hidden (step kernel)
      blocks; default: the platform's.

  Returns:
    (final carry, ys [T, B, out]) with the dtype of carry0.
  """
  program = programs.program_for(cell)
  target = platforms.resolve(platform, interpret, chip)
  if impl is not None and impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  if xp.ndim != 3:
    raise ValueError(f"xp must be [time, batch, width], got shape {tuple(xp.shape)}")
  num_steps, batch, _ = xp.shape
  resets, h_mask, keeps, grad_clip = (options.resets, options.h_mask, options.keeps,
                                      options.grad_clip)
  dtype = jax.tree.leaves(carry0)[0].dtype
  padded_b, block_b = target.batch_blocks(batch, xp.dtype, block_b)
  padded_n, padded_ny = _padded_sizes(target, program)
  packed = program.pack(params, xp, carry0, padded_b, padded_n, padded_ny)
  cluster, persistent_why, backward_why = 0, "not asked for", None
  if impl in (None, "persistent"):
    w_dtype, fused = params[cell.recurrent_weights[0]].dtype, _fused(options)
    cluster, persistent_why = _persistent_plan(target, program, batch, w_dtype, xp.dtype,
                                               fused, lengths)
    if persistent_why is None and target.platform == "gpu":
      backward_why = persistent.backward_unsupported(program, cell.hidden_size, batch, w_dtype,
                                                     xp.dtype, lengths is not None, cluster,
                                                     fused)
      if backward_why is not None and not _inner_matrices_fit(target, program):
        cluster, persistent_why = 0, (f"{backward_why}, and the step kernel would need the "
                                      f"matrices inside the gate math whole")
  if impl == "persistent" and persistent_why is not None:
    raise ValueError(f"impl='persistent' cannot run {type(cell).__name__}(hidden_size="
                     f"{cell.hidden_size}) here: {persistent_why}")
  if persistent_why is not None:
    _check_inner_matrices(target, program, persistent_why)
  impl = impl or choose_impl(target, cell, program, packed, persistent_why)
  if impl == "persistent":
    units = persistent.UNITS if target.platform == "gpu" else cell.hidden_size
    padded_n, padded_b = persistent.padded_sizes(cell.hidden_size, batch, units)
    padded_ny = padded_n
    block_b = min(padded_b, platforms.GPU_BATCH_BLOCK) if target.platform == "gpu" else padded_b
    packed = program.pack(params, xp, carry0, padded_b, padded_n, padded_ny)
  layout = program.layout(padded_n, padded_ny)

  if impl == "sequence":
    block_t = target.time_block(num_steps, block_t,
                                _step_bytes(program, packed, block_b, keeps, resets),
                                _weight_bytes(program, packed))
  else:
    block_t = num_steps
  padded_t = -(-num_steps // block_t) * block_t
  xp_k = programs.pad_to(packed.xp, (padded_t, *packed.xp.shape[1:]))
  lengths_k = None
  if lengths is not None or padded_t != num_steps:
    full = jnp.full((batch,), num_steps, jnp.int32)
    lengths_k = programs.pad_to(full if lengths is None else lengths.astype(jnp.int32),
                                (padded_b,))[:, None]  # padded rows: length 0
  extras = _extras(program, layout, resets, h_mask, keeps, lengths_k, (num_steps, batch),
                   (padded_t, padded_b))

  if impl == "sequence":
    cfg = sequence.SequenceConfig(program, target, block_b, block_t, lengths_k is not None,
                                  grad_clip)
    seqs, finals = sequence.fused_sequence(cfg, xp_k, packed.states0, packed.weights,
                                           packed.small, *extras)
  elif impl == "persistent":
    cfg = _persistent_config(target, program, padded_n, cluster, block_b, grad_clip, interpret,
                             backward_why)
    seqs, finals = persistent.persistent_sequence(cfg, xp_k, packed.states0, packed.weights,
                                                  packed.small, *extras)
  else:
    cfg = step.StepConfig(program, target, block_b,
                          step.hidden_block(program, target, packed, block_n), grad_clip)
    seqs, finals = step.stepped_sequence(cfg, xp_k, packed.states0, packed.weights,
                                         packed.small, *extras)
  seqs = tuple(s[:num_steps] for s in seqs)
  if padded_t != num_steps:  # the same states; their cotangent then skips the padded steps
    finals = tuple(s[-1] for s in seqs)  # and grad_clip sees the same steps as the scan
  return program.unpack(seqs, finals, lengths, batch, dtype, layout)
