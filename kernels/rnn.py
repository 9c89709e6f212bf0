"""The kernels' entry point: the same call as `rnn_research.layers.recurrence`.

    recurrence(cell, params, xp, carry0, lengths) -> (final carry, ys [T, B, out])

It packs the library's params into the kernels' layout (padded to the platform's tiles),
runs the whole-sequence kernel, or the step kernel in a scan where the recurrent weights do
not fit on chip (logged once), and unpacks. Gradients reach the library params through the
packing, which is plain jnp.
"""
import jax
import jax.numpy as jnp

from kernels import platforms, programs, sequence, step
from rnn_research.cells.base import CellDef

IMPLS = ("sequence", "step")


def supports(cell: CellDef, platform: str | None = None) -> bool:
  """Whether backend="auto" should run `cell` on the kernels here."""
  try:
    programs.program_for(cell)
  except ValueError:
    return False
  platform = platforms.default_platform() if platform is None else platform
  gpu = platforms.Target("gpu")
  return (platforms.supported_platform(platform)
          and (platform != "gpu" or gpu.fits(_inner_matrix_bytes(gpu, cell))))


def _inner_matrix_bytes(target: platforms.Target, cell: CellDef) -> int:
  """Bytes of the matrices inside the gate math (LSTMP's P, the Cho GRU's R_n), which every
  kernel program holds whole, padded, in f32."""
  shapes = cell.param_shapes()
  return sum(4 * target.hidden_size(shapes[k][0]) * target.hidden_size(shapes[k][1])
             for k in ("P", "R_n") if k in shapes)


def _check_inner_matrices(target: platforms.Target, cell: CellDef) -> None:
  size = _inner_matrix_bytes(target, cell)
  if target.platform == "gpu" and not target.fits(size):
    raise ValueError(
        f"hidden_size={cell.hidden_size} is too large for the Pallas kernels on gpu: the "
        f"matrix inside {type(cell).__name__}'s gate math (LSTMP's P, the Cho GRU's R_n) takes "
        f"{size} bytes in f32, more than the {platforms.WEIGHT_BUDGET_BYTES['gpu']} one "
        f"kernel program may hold; use backend='scan' (or 'auto')")


def _weight_bytes(packed: programs.Packed) -> int:
  return sum(a.size * a.dtype.itemsize for a in (*packed.weights, *packed.small))


def _step_bytes(packed: programs.Packed, block_b: int) -> int:
  """Bytes one time step of one batch block streams through the backward sequence kernel:
  xp in and d xp out, the previous states and their cotangents in (f32)."""
  _, g, _, n = packed.xp.shape
  return block_b * (2 * g * n * packed.xp.dtype.itemsize
                    + 2 * sum(s.shape[-1] for s in packed.states0) * 4)


def choose_impl(target: platforms.Target, cell: CellDef, packed: programs.Packed) -> str:
  """The whole-sequence kernel where the weights fit on chip, else the step kernel."""
  size = _weight_bytes(packed)
  if target.fits(size):
    return "sequence"
  platforms.log_once(
      f"Pallas: the recurrent weights of {type(cell).__name__}(hidden_size="
      f"{cell.hidden_size}) take {size} bytes, more than the "
      f"{platforms.WEIGHT_BUDGET_BYTES[target.platform]} the whole-sequence kernel may keep on "
      f"chip on {target.platform}; running the step kernel in a scan instead.")
  return "step"


def recurrence(cell: CellDef, params, xp, carry0, lengths=None, unroll: int = 1, *,
               platform: str | None = None, interpret=None, impl: str | None = None,
               block_b: int | None = None, block_t: int | None = None,
               block_n: int | None = None):
  """Runs the recurrence on the Pallas kernels.

  Args:
    cell, params, xp, carry0, lengths: as `rnn_research.layers.recurrence`: xp [T, B, width]
      the input projection, carry0 the carry at t = 0, lengths optional int [B].
    unroll: accepted for the same signature; the kernels loop inside.
    platform: "gpu", "tpu" or "cpu" (default: JAX's default backend).
    interpret: True / `pltpu.InterpretParams` to interpret (default: only on the cpu).
    impl: "sequence" or "step" (default: "sequence" where the weights fit on chip).
    block_b, block_t, block_n: batch, time (sequence kernel) and hidden (step kernel)
      blocks; default: the platform's.

  Returns:
    (final carry, ys [T, B, out]) with the dtype of carry0.
  """
  del unroll
  program = programs.program_for(cell)
  target = platforms.resolve(platform, interpret)
  _check_inner_matrices(target, cell)
  if impl is not None and impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  if xp.ndim != 3:
    raise ValueError(f"xp must be [time, batch, width], got shape {tuple(xp.shape)}")
  num_steps, batch, _ = xp.shape
  dtype = jax.tree.leaves(carry0)[0].dtype
  padded_b, block_b = target.batch_blocks(batch, xp.dtype, block_b)
  packed = program.pack(params, xp, carry0, padded_b, target.hidden_size(cell.hidden_size),
                        target.hidden_size(cell.output_size))
  impl = impl or choose_impl(target, cell, packed)

  if impl == "sequence":
    block_t = target.time_block(num_steps, block_t, _step_bytes(packed, block_b),
                                _weight_bytes(packed))
  else:
    block_t = num_steps
  padded_t = -(-num_steps // block_t) * block_t
  xp_k = programs.pad_to(packed.xp, (padded_t, *packed.xp.shape[1:]))
  lengths_k = None
  if lengths is not None or padded_t != num_steps:
    full = jnp.full((batch,), num_steps, jnp.int32)
    lengths_k = programs.pad_to(full if lengths is None else lengths.astype(jnp.int32),
                                (padded_b,))[:, None]  # padded rows: length 0

  if impl == "sequence":
    cfg = sequence.SequenceConfig(program, target, block_b, block_t, lengths_k is not None)
    seqs, finals = sequence.fused_sequence(cfg, xp_k, packed.states0, packed.weights,
                                           packed.small, lengths_k)
  else:
    cfg = step.StepConfig(program, target, block_b,
                          step.hidden_block(program, target, packed, block_n))
    seqs, finals = step.stepped_sequence(cfg, xp_k, packed.states0, packed.weights,
                                         packed.small, lengths_k)
  seqs = tuple(s[:num_steps] for s in seqs)
  return program.unpack(seqs, finals, lengths, batch, dtype)
