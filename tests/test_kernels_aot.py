"""The deeper, optional tier: full ahead-of-time compiles for TPU chips (needs `libtpu`) and for
an H100 (needs `jax-cuda13-plugin` and `jax-cuda13-pjrt`, installed with --no-deps), on a CPU.
They catch what lowering does not: VMEM and shared-memory overflows, register spills. Skipped
where the packages are missing; run them with

    pip install --no-deps libtpu==0.0.51 jax-cuda13-plugin==0.12.0.1 jax-cuda13-pjrt==0.12.0.1
    JAX_PLATFORMS=cpu python -m pytest tests/test_kernels_aot.py
"""
import importlib.util
import logging
import warnings

import jax
import jax.numpy as jnp
import pytest

from kernels import platforms
from rnn_research.layers import recurrence
from rnn_research.cells import GRUDef, LSTMDef, PRESETS

# jax-ml/jax#28376's H100 80GB HBM3 target config (runtime 13.0, cuDNN 9.10).
H100 = """gpu_device_info { threads_per_block_limit: 1024 threads_per_warp: 32
 shared_memory_per_block: 49152 shared_memory_per_core: 233472 threads_per_core_limit: 2048
 core_count: 132 fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
 block_dim_limit_z: 65535 memory_bandwidth: 3352320000000 l2_cache_size: 52428800
 clock_rate_ghz: 1.98 device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
 cuda_compute_capability { major: 9 } registers_per_core_limit: 65536
 registers_per_block_limit: 65536 }
platform_name: "CUDA" dnn_version_info { major: 9 minor: 10 }
runtime_version { major: 13 minor: 0 patch: 0 } device_description_str: "NVIDIA H100 80GB HBM3" """



def installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # a missing parent package
    return False


needs_libtpu = pytest.mark.skipif(not installed("libtpu"), reason="libtpu is not installed")
needs_cuda_plugin = pytest.mark.skipif(not installed("jax_plugins.xla_cuda13"),
                                       reason="jax-cuda13-plugin is not installed")


def compile_grads(cell, platform, sharding, dtype, batch=16, steps=32, **kernel_options):
  """AOT-compiles the gradient of a loss on the kernels' outputs (default impl choice)."""
  spec = lambda shape, dt=dtype: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)
  params = {k: spec(s) for k, s in cell.param_shapes().items()}
  xp = spec((steps, batch, cell.num_gates * cell.hidden_size))  # the input projection
  carry0 = jax.tree.map(lambda c: spec(c.shape), cell.initial_carry((batch,)))

  def grads(params, xp, carry0):
    def loss(*args):
      out = recurrence(cell, *args, backend="pallas", platform=platform, interpret=False,
                       **kernel_options)
      return sum(jnp.sum(a.astype(jnp.float32)) for a in jax.tree.leaves(out))
    return jax.grad(loss, argnums=(0, 1, 2))(params, xp, carry0)

  return jax.jit(grads).trace(params, xp, carry0).lower().compile()


@needs_libtpu
@pytest.mark.parametrize("topology", ["v4=1x1x1", "v5e=1x1"])
@pytest.mark.parametrize("cell,dtype", [
    (LSTMDef(1024, 1024, PRESETS["NP"]), jnp.bfloat16),  # 8 MiB of R: the sequence kernel
    (LSTMDef(1024, 1024, PRESETS["NP"]), jnp.float32),  # 16 MiB: the step kernel
    (LSTMDef(256, 256, PRESETS["FGR"], proj_size=128), jnp.bfloat16),
    (GRUDef(512, 512, reset_after=False), jnp.bfloat16),
], ids=["lstm1024-bf16", "lstm1024-f32", "lstmp-fgr", "gru-cho"])
def test_compiles_for_tpu(topology, cell, dtype):
  from jax.experimental import topologies
  device = topologies.get_topology_desc(topology, platform="tpu").devices[0]
  compile_grads(cell, "tpu", jax.sharding.SingleDeviceSharding(device), dtype)


@needs_libtpu
@pytest.mark.parametrize("topology,chip", [("v4=1x1x1", "v4"), ("v5e=1x1", "v5e"),
                                           ("v6e=1x1", "v6e")])
@pytest.mark.parametrize("hidden", [256, 512, 768, 1024])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
def test_sequence_kernel_keeps_r_in_vmem_per_generation(topology, chip, hidden, dtype, caplog):
  """R in VMEM for the whole sequence up to hidden 1024 in bf16 on every chip, in f32 where
  the chip's VMEM holds it (not v4's 16 MiB at 1024: the step kernel, logged)."""
  from jax.experimental import topologies
  cell = LSTMDef(hidden, hidden, PRESETS["NP"])
  device = topologies.get_topology_desc(topology, platform="tpu").devices[0]
  platforms.log_once.cache_clear()
  with caplog.at_level(logging.WARNING, logger="kernels.platforms"):
    compile_grads(cell, "tpu", jax.sharding.SingleDeviceSharding(device), dtype, chip=chip)
  r_bytes = 4 * hidden * hidden * jnp.dtype(dtype).itemsize
  falls_back = r_bytes > platforms.Target("tpu", chip=chip).weight_budget
  assert falls_back == (chip == "v4" and hidden == 1024 and dtype == jnp.float32)
  assert any(f"on tpu {chip}; running the step kernel" in r.getMessage()
             for r in caplog.records) == falls_back


@needs_cuda_plugin
@pytest.mark.parametrize("cell,dtype", [
    (LSTMDef(64, 64, PRESETS["NP"]), jnp.bfloat16),  # the sequence kernel
    (GRUDef(128, 128), jnp.bfloat16),  # the sequence kernel, 96 KiB of R
    (LSTMDef(128, 128, PRESETS["NP"]), jnp.bfloat16),  # 128 KiB: the persistent kernel
    (LSTMDef(1024, 1024, PRESETS["NP"]), jnp.bfloat16),  # persistent forward, step backward
    (GRUDef(128, 128, reset_after=False), jnp.float32),  # R_n (64 KiB) whole in the step kernel
    (LSTMDef(128, 128, PRESETS["V"], proj_size=64), jnp.bfloat16),
], ids=["lstm64", "gru128", "lstm128", "lstm1024", "gru-cho128-f32", "lstmp128"])
def test_compiles_for_h100(cell, dtype):
  from jax.experimental import topologies
  topology = topologies.get_topology_desc(platform="cuda", target_config=H100,
                                          topology="1x1x1")
  mesh = topologies.make_mesh(topo=topology, mesh_shape=(1,), axis_names=("x",))
  with warnings.catch_warnings(), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    warnings.filterwarnings("ignore", message="The Pallas Triton backend is deprecated")
    compile_grads(cell, "gpu", jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
                  dtype)
