"""Data parallelism over every device of every process, with `jax.sharding` (no `pmap`).

A pack of P trials (see `rnn_research.train.train_pack`) trains on a 2-D mesh of all devices,
axes ("trials", "data") of sizes t x d:
  state  [P, ...]  trial axis over "trials", replicated over "data"
  batch  [B, ...]  batch axis over "data", replicated over "trials"
t = gcd(devices, P): trials run side by side without communication, and the rest of the devices
split each batch (XLA sums their gradients). With several processes (`initialize`) t is 1, so
every value the host reads (losses, steps) is replicated on every process. A batch whose size
the "data" axis does not divide (an epoch's last, smaller batch) is replicated instead;
`check_batch` refuses a configured batch size that it does not divide.

Every process builds the same global batch from the same data; each device takes its slice.
"""
import json
import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

TRIALS, DATA = "trials", "data"


def mesh_shape(num_devices: int, num_trials: int, num_processes: int = 1) -> tuple[int, int]:
  """(t, d): the sizes of the "trials" and "data" axes of a pack's mesh."""
  if num_devices < 1 or num_trials < 1 or num_processes < 1:
    raise ValueError(f"num_devices, num_trials and num_processes must be >= 1, got "
                     f"{num_devices}, {num_trials}, {num_processes}")
  trials = math.gcd(num_devices, num_trials) if num_processes == 1 else 1
  return trials, num_devices // trials


def check_batch(batch_size: int, num_devices: int, num_trials: int,
                num_processes: int = 1) -> None:
  """Refuses a `batch_size` that the "data" axis of the pack's mesh does not divide."""
  trials, data = mesh_shape(num_devices, num_trials, num_processes)
  if batch_size % data:
    raise ValueError(
        f"batch_size={batch_size} cannot be split over {data} devices: {num_devices} devices "
        f"train a pack of {num_trials} trials as {trials} trial group(s) x {data} batch slices; "
        f"use a batch_size that is a multiple of {data}, a pack size that shares more factors "
        f"with {num_devices}, or fewer devices (CUDA_VISIBLE_DEVICES, or --gpus_per_task)")


def pack_mesh(num_trials: int) -> Mesh:
  """The mesh of all devices (of all processes) for a pack of `num_trials` trials."""
  shape = mesh_shape(jax.device_count(), num_trials, jax.process_count())
  return jax.make_mesh(shape, (TRIALS, DATA), axis_types=(AxisType.Auto,) * 2)


def mesh_of(tree) -> Mesh:
  """The mesh that a tree placed by `shard_trials` lives on."""
  return jax.tree.leaves(tree)[0].sharding.mesh


def put(x, sharding: NamedSharding) -> jax.Array:
  """`x` (host or device array, or typed PRNG keys) as a global array with `sharding`; every
  process must pass the same value."""
  if sharding.is_fully_addressable or (isinstance(x, jax.Array) and not x.is_fully_addressable):
    return jax.device_put(x, sharding)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(put(jax.random.key_data(x), sharding),
                                    impl=jax.random.key_impl(x))
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_trials(tree, mesh: Mesh):
  """Places a pack's state (every leaf [P, ...]) with its trial axis over "trials"."""
  sharding = NamedSharding(mesh, PartitionSpec(TRIALS))
  return jax.tree.map(lambda leaf: put(leaf, sharding), tree)


def shard_batch(batch, mesh: Mesh):
  """Places a batch (every leaf [B, ...]) with its batch axis over "data" when that axis
  divides B, else replicated. On a mesh of one device the batch stays on the host (a jitted
  function's call moves it, faster than placing it here)."""
  if mesh.size == 1:
    return batch
  size = len(jax.tree.leaves(batch)[0])
  spec = PartitionSpec(DATA) if size % mesh.shape[DATA] == 0 else PartitionSpec()
  return jax.tree.map(lambda leaf: put(leaf, NamedSharding(mesh, spec)), batch)


def _visible_gpus() -> list[int] | None:
  visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
  return list(range(len(visible.split(",")))) if visible else None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> int:
  """Joins the processes of one program with `jax.distributed.initialize` and returns their
  number: with an explicit coordinator ("host:port", num_processes, process_id); with `auto`,
  as JAX finds them (TPU VMs of a slice, Open MPI, Kubernetes, SLURM); or from the environment
  of a SLURM step of several tasks (srun; a task per node, each owning the GPUs SLURM gives
  it). One process joins nothing. Call before anything else uses JAX."""
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError(f"coordinator_address, num_processes and process_id go together, got "
                       f"{coordinator_address!r}, {num_processes!r}, {process_id!r}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    if num_processes > 1:
      jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif auto:
    jax.distributed.initialize()
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in os.environ:
    # Without local_device_ids JAX would give each task only the GPU of its local rank.
    jax.distributed.initialize(local_device_ids=_visible_gpus())
  return jax.process_count()


def broadcast_json(value):
  """Process 0's `value` (anything JSON can hold), on every process."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
  buffer = np.zeros(size, np.uint8)
  buffer[:min(size, data.size)] = data[:size]
  return json.loads(bytes(multihost_utils.broadcast_one_to_all(buffer)))
