"""Where a kernel runs, and the tile sizes, padding and compiler params that follow from it.

    gpu  Triton lowering. Every array a kernel touches has power-of-2 sizes and a dot needs
         16 rows, so the hidden size pads to a power of 2 >= 16 and batch blocks are 16 rows.
         Programs run in parallel, so the whole time axis is one block (the loop is inside).
    tpu  Mosaic. Blocks end in (8, 128) tiles (16 rows for bf16); the grid runs in order, so
         time is split into chunks along an "arbitrary" axis and the state carries over.
    cpu  interpret mode: no padding, whatever blocks the caller asks for.

The whole-sequence kernel keeps every recurrent weight on chip for the whole loop; `fits`
says whether they do (GPU: shared memory of one CTA; TPU: the chip generation's VMEM), else
the persistent kernel (GPU) or the step kernel runs.
"""
import dataclasses
import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp

PLATFORMS = ("gpu", "tpu", "cpu")

MiB = 1024 * 1024
# On-chip budgets for the recurrent weights of the whole-sequence kernel. GPU: one CTA's
# shared memory (232448 B on an H100). Ahead-of-time H100 compiles (forward and backward)
# passed for bf16 GRU at H=128 (96 KiB of weights) and overflowed for bf16 LSTM at H=128
# (128 KiB; 270336 B requested). TPU: the chip's VMEM (`TPU_VMEM_BYTES`) less
# TPU_BUFFER_BYTES for the double-buffered input and output blocks.
WEIGHT_BUDGET_BYTES = {"gpu": 100 * 1024, "cpu": 1 << 62}
TPU_BUFFER_BYTES = 4 * MiB
# Physical VMEM per TensorCore, probed with libtpu 0.0.51 (shared/research/pallas-persistent.md).
TPU_VMEM_BYTES = {"v4": 16 * MiB, "v5p": 64 * MiB, "v5e": 128 * MiB, "v6e": 128 * MiB,
                  "7x": 64 * MiB}
TPU_DEFAULT_CHIP = "v4"  # the smallest VMEM: the budgets where the chip is unknown
TPU_TIME_BLOCK = 16
# VMEM the TPU kernels plan to use: the chip's less 2 MiB left to Mosaic. An AOT compile for
# v4 at H=1024, bf16 overflowed (16.95M) with 16-step chunks before the chunk length was sized
# by this.
TPU_MOSAIC_RESERVE_BYTES = 2 * MiB
GPU_BATCH_BLOCK = 16
TPU_MAX_BATCH_BLOCK = 256
GPU_K_BLOCK = 64  # contraction chunk of the step kernel's matmul on Triton

logger = logging.getLogger(__name__)


def _next_pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def default_platform() -> str:
  backend = jax.default_backend()
  return "gpu" if backend in ("gpu", "cuda", "rocm") else backend


def tpu_chip(device_kind: str) -> str:
  """The TPU generation (a key of TPU_VMEM_BYTES) of a device kind ("TPU v5 lite", ...)."""
  kind = device_kind.lower().replace(" ", "")
  for marker, chip in (("v5lite", "v5e"), ("v5e", "v5e"), ("v6lite", "v6e"), ("v6e", "v6e"),
                       ("v5p", "v5p"), ("v5", "v5p"), ("7x", "7x"), ("v4", "v4")):
    if marker in kind:
      return chip
  return TPU_DEFAULT_CHIP


@dataclasses.dataclass(frozen=True)
class Target:
  """platform: "gpu", "tpu" or "cpu". interpret: False (compile for the platform), True
  (the HLO interpreter) or a `pltpu.InterpretParams` (TPU simulation, races detected).
  chip: the TPU generation, a key of TPU_VMEM_BYTES (sizes the VMEM budgets)."""
  platform: str
  interpret: Any = False
  chip: str = TPU_DEFAULT_CHIP

  def __post_init__(self):
    if self.platform not in PLATFORMS:
      raise ValueError(f"platform must be one of {PLATFORMS}, got {self.platform!r}")
    if self.chip not in TPU_VMEM_BYTES:
      raise ValueError(f"chip must be one of {sorted(TPU_VMEM_BYTES)}, got {self.chip!r}")
    if self.platform == "cpu" and self.interpret is False:
      raise ValueError("interpret must be set on the cpu platform: Pallas runs there only in "
                       "interpret mode")

  def hidden_size(self, n: int) -> int:
    """n padded to the platform's lane tile."""
    if self.platform == "gpu":
      return max(16, _next_pow2(n))
    if self.platform == "tpu":
      return _round_up(n, 128)
    return n

  def batch_blocks(self, batch: int, dtype, block_b: int | None = None) -> tuple[int, int]:
    """(padded batch, batch block)."""
    if block_b is None:
      if self.platform == "gpu":
        block_b = GPU_BATCH_BLOCK
      elif self.platform == "tpu":
        rows = 16 if jnp.dtype(dtype).itemsize < 4 else 8
        block_b = min(_round_up(batch, rows), TPU_MAX_BATCH_BLOCK)
      else:
        block_b = batch
    if block_b < 1:
      raise ValueError(f"block_b must be positive, got {block_b}")
    if self.platform == "gpu" and (block_b < 16 or block_b != _next_pow2(block_b)):
      raise ValueError(f"block_b must be a power of 2 >= 16 on gpu, got {block_b}")
    if self.platform == "tpu" and block_b % 8:
      raise ValueError(f"block_b must be a multiple of 8 on tpu, got {block_b}")
    return _round_up(batch, block_b), block_b

  def time_block(self, num_steps: int, block_t: int | None = None, step_bytes: int = 0,
                 weight_bytes: int = 0) -> int:
    """Steps per grid step of the whole-sequence kernel. On TPU the chunk's double-buffered
    blocks (`step_bytes` per step, the backward's) share VMEM with the weights."""
    if block_t is None:
      if self.platform != "tpu":
        return num_steps
      room = self.vmem_plan_bytes - weight_bytes
      return max(1, min(TPU_TIME_BLOCK, num_steps, room // max(2 * step_bytes, 1)))
    if self.platform == "gpu" and block_t != num_steps:
      raise ValueError(f"block_t must be the whole sequence ({num_steps}) on gpu, where "
                       f"kernel programs run in parallel; got {block_t}")
    if block_t < 1:
      raise ValueError(f"block_t must be positive, got {block_t}")
    return block_t

  def k_block(self, k: int) -> int:
    """Contraction chunk of the step kernel's matmuls."""
    return min(k, GPU_K_BLOCK) if self.platform == "gpu" else k

  @property
  def hoist_weights(self) -> bool:
    """Load the weights into values before the time loop (Triton keeps them on chip) rather
    than reading them from their VMEM refs at each step (Mosaic: no register spills)."""
    return self.platform != "tpu"

  @property
  def vmem_plan_bytes(self) -> int:
    """VMEM the TPU kernels plan to use on this chip."""
    return TPU_VMEM_BYTES[self.chip] - TPU_MOSAIC_RESERVE_BYTES

  @property
  def weight_budget(self) -> int:
    """Bytes of weights the whole-sequence kernel may keep on chip for the whole loop."""
    if self.platform == "tpu":
      return TPU_VMEM_BYTES[self.chip] - TPU_BUFFER_BYTES
    return WEIGHT_BUDGET_BYTES[self.platform]

  def fits(self, weight_bytes: int) -> bool:
    return weight_bytes <= self.weight_budget

  def weight_spec(self, block_shape, index_map):
    """A BlockSpec for an operand whose block never changes: single-buffered on TPU."""
    from jax.experimental import pallas as pl
    if self.platform == "tpu":
      return block_spec(block_shape, index_map, pipeline_mode=pl.Buffered(1))
    return block_spec(block_shape, index_map)

  def compiler_params(self, semantics: tuple[str, ...], vmem_bytes: int = 0):
    """Explicit compiler params: Triton warps/stages, or Mosaic grid-axis semantics."""
    if self.platform == "gpu":
      from jax.experimental.pallas import triton as plt
      return plt.CompilerParams(num_warps=4, num_stages=1 if "arbitrary" in semantics else 2)
    if self.platform == "tpu":
      from jax.experimental.pallas import tpu as pltpu
      # Mosaic's default scoped VMEM limit is 16-32 MiB depending on the chip; ask for more
      # only when the estimate needs it.
      limit = (min(_round_up(int(vmem_bytes * 1.25), MiB), TPU_VMEM_BYTES[self.chip])
               if vmem_bytes > 16 * MiB else None)
      return pltpu.CompilerParams(dimension_semantics=semantics, vmem_limit_bytes=limit)
    return None


def block_spec(block_shape, index_map, **options):
  """`pl.BlockSpec` whose index map returns int32 block indices also under jax_enable_x64
  (Mosaic rejects the int64 constants that x64 makes of literal indices)."""
  from jax.experimental import pallas as pl
  int32_map = lambda *grid: tuple(jnp.asarray(i, jnp.int32) for i in index_map(*grid))
  return pl.BlockSpec(block_shape, int32_map, **options)


def resolve(platform: str | None = None, interpret: Any = None,
            chip: str | None = None) -> Target:
  """The target for a call: `platform` defaults to JAX's default backend; `interpret`
  defaults to True on the cpu and False elsewhere; `chip` to the TPU generation of the
  first device where it is a TPU, else the one of least VMEM (v4)."""
  platform = default_platform() if platform is None else platform
  if interpret is None:
    interpret = platform == "cpu"
  if chip is None:
    device = jax.devices()[0]
    chip = tpu_chip(device.device_kind) if device.platform == "tpu" else TPU_DEFAULT_CHIP
  return Target(platform, interpret, chip)


def supported_platform(platform: str | None = None) -> bool:
  """Whether the kernels compile for this platform (what backend="auto" asks)."""
  return (default_platform() if platform is None else platform) in ("gpu", "tpu")


@functools.cache
def log_once(message: str) -> None:
  """Logs `message` at WARNING the first time it is seen in this process."""
  logger.warning(message)


def split_refs(refs, sizes):
  """Splits a kernel's flat refs into consecutive groups of the given sizes (a size may be a
  bool: an optional operand)."""
  out, refs = [], list(refs)
  for size in sizes:
    out.append(tuple(refs[:size]))
    refs = refs[size:]
  assert not refs
  return out


def optional_ref(group):
  """The ref of an optional operand's group, or None when it was not passed."""
  return group[0] if group else None
