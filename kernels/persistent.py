"""Persistent whole-sequence kernel for NVIDIA Hopper GPUs (Pallas, Mosaic GPU backend), for
hidden sizes whose recurrent weights no single thread block can hold (256-1024).

The hidden units are split over clusters of `units` (64: one `wgmma` M tile) and, inside a
cluster, the contraction (h's rows) over its C thread blocks (CTAs), so CTA (i, q) keeps

    r_s [terms, units, K/C]: rows i·units.. of every recurrent weight, columns q·K/C..

in shared memory for the whole sequence; the grid (clusters · C CTAs) never exceeds the SM
count, so every CTA is resident. Step t:

  1. grid barrier: h_{t-1} of every unit is in global memory (a monotone counter on a global
     semaphore, or, for a grid of one cluster, the cluster barrier);
  2. each CTA copies its K-slice of h_{t-1} (TMA) and issues one `wgmma` per term
     [units, K/C] @ [K/C, B] into per-term f32 accumulators (all in one register layout, so
     the gate math never slices lanes);
  3. the other CTAs store their partial sums to global memory (TMA); cluster barrier;
  4. the cluster's leader loads and adds them, runs the cell's gate math (`Program.step`, the
     same as every other kernel's, on [units, B] blocks), stores its states for step t and
     h_t (TMA), and all CTAs signal the grid barrier.

The partial sums go through global memory (L2), not distributed shared memory, because
Pallas's GPU interpreter runs neither `cluster_ref` nor `async_store_smem` to a peer, and this
form is the one the CPU tests check; DSMEM (or a TMA reduce-add, also not interpreted) would
save the leader C-1 round trips per step and is the first thing to try once it is timed.

States are transposed ([w, B]: a cluster's units are a contiguous row block and h is the
`wgmma` B operand as is). The backward pass runs the step kernel in a scan (`step`), behind
the same `autodiff.sequence_op`; a persistent backward kernel (Rᵀ slices, gate gradients
broadcast) is future work.

Supported: column-separable cells without head-wise recurrence whose every recurrent weight
reads h (the LSTM presets but FGR, without projection; GRU with reset_after), bf16 or f32
weights (f32: the tensor cores run tf32), lengths; `unsupported` names what is not (resets,
recurrent dropout, zoneout, ...), and `kernels.rnn` then runs the step kernel, logged.

The same kernel with a grid of one cluster (`barrier="cluster"`) runs in Pallas's GPU
interpret mode on a CPU, where the CTAs of a cluster run concurrently and races are detected.
"""
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from kernels import autodiff, programs, step
from kernels.programs import Program

f32 = jnp.float32
UNITS = 64  # hidden units per cluster: the M of one wgmma
MAX_CLUSTER = 8  # the portable cluster size on Hopper
# Shared memory one CTA may use on an H100/H200 (the opt-in maximum, 227 KiB), and the plan's
# ceiling below it, leaving room for Mosaic's own barriers and alignment.
SMEM_LIMIT_BYTES = 232448
SMEM_PLAN_BYTES = 216 * 1024
H100_SMS = 132
BATCH_TILE = 16  # batch pads to a multiple of this (the wgmma N)
MAX_BATCH = 256  # the largest wgmma N
BARRIERS = ("semaphore", "cluster")


@dataclasses.dataclass(frozen=True)
class PersistentConfig:
  """Static arguments of the persistent kernel.

  program: the cell. units: hidden units per cluster. cluster: CTAs per cluster (C).
  barrier: "semaphore" (a global semaphore; any number of clusters) or "cluster" (one
    cluster; what GPU interpret mode runs). interpret: False or a `plgpu.InterpretGPUParams`.
  backward, backward_hidden: the config of the step kernel that runs the backward pass, and
    the hidden size it pads to (Triton's power of 2).
  grid_barrier: False drops the per-step grid barrier; only for the test that proves the
    race detector catches its absence.
  """
  program: Program
  units: int
  cluster: int
  backward: step.StepConfig
  backward_hidden: int
  barrier: str = "semaphore"
  interpret: Any = False
  grid_barrier: bool = True

  def __post_init__(self):
    if self.barrier not in BARRIERS:
      raise ValueError(f"barrier must be one of {BARRIERS}, got {self.barrier!r}")


def unsupported(program: Program, *, resets=False, h_mask=False, keeps=False) -> str | None:
  """Why the persistent kernel cannot run this cell with these options, or None."""
  if not program.separable:
    return "its gate math mixes hidden columns (layer norm, a projection, Cho's R_n)"
  if program.heads > 1:
    return "its recurrence is head-wise"
  if any(src != program.output_state for src, _ in program.terms):
    return "a recurrent weight reads a state other than h (FGR)"
  for name, on in (("resets", resets), ("recurrent dropout", h_mask), ("zoneout", keeps)):
    if on:
      return f"{name} is not fused into it yet"
  return None


def padded_sizes(hidden: int, batch: int, units: int = UNITS) -> tuple[int, int]:
  """(hidden padded to whole clusters, batch padded to the wgmma N tile)."""
  return -(-hidden // units) * units, -(-batch // BATCH_TILE) * BATCH_TILE


def smem_bytes(program: Program, padded_n: int, padded_b: int, cluster: int, weight_dtype,
               xp_dtype, masked: bool, units: int = UNITS) -> int:
  """The shared memory one CTA asks for (Mosaic adds under 1 KiB of barriers and alignment;
  the lowering tests read the exact figure): its R slice, its K-slice of h, the h_t tile, the
  partial sums (also the states' staging), the gates' inputs, the gate math's vectors and
  the lengths."""
  w, x = jnp.dtype(weight_dtype).itemsize, jnp.dtype(xp_dtype).itemsize
  k, b = padded_n // cluster, padded_b
  terms, states = len(program.terms), len(program.state_widths(1, 1))
  return (w * (terms * units * k + k * b + units * b) + 4 * max(terms, states) * units * b
          + x * program.num_gates * units * b + 4 * max(len(program.small_names), 1) * units
          + (4 * units * b if masked else 0))


def plan(program: Program, hidden: int, batch: int, weight_dtype, xp_dtype, masked: bool,
         num_sms: int = H100_SMS) -> tuple[int, str | None]:
  """(cluster size, None) for the persistent kernel at this size, or (0, why not).

  The cluster is the largest power of 2 up to MAX_CLUSTER whose grid fits the SMs (more
  CTAs: less of R and of the matmul each) and whose shared memory fits the plan."""
  padded_n, padded_b = padded_sizes(hidden, batch)
  if padded_b > MAX_BATCH:
    return 0, f"batch {batch} pads to {padded_b} > {MAX_BATCH}, the largest wgmma N"
  clusters = padded_n // UNITS
  for cluster in (8, 4, 2, 1):
    k = padded_n // cluster
    if cluster > MAX_CLUSTER or clusters * cluster > num_sms or k % 16:
      continue
    size = smem_bytes(program, padded_n, padded_b, cluster, weight_dtype, xp_dtype, masked)
    if size <= SMEM_PLAN_BYTES:
      return cluster, None
  return 0, (f"no cluster of <= {MAX_CLUSTER} CTAs fits hidden {hidden} (padded {padded_n}) at "
             f"batch {batch} in {num_sms} SMs with {SMEM_PLAN_BYTES} bytes of shared memory "
             f"per CTA")


# -- the kernel -------------------------------------------------------------------------------

class _Barriers:
  """Indices of the kernel's TMA barriers: h's K-slice, R's terms, xs's gates, the rest."""

  def __init__(self, num_terms: int, num_gates: int):
    self.h, self.misc = 0, 1
    self.r = range(2, 2 + num_terms)
    self.xs = range(2 + num_terms, 2 + num_terms + num_gates)
    self.count = 2 + num_terms + num_gates


def _kernel(*refs, cfg: PersistentConfig, num_steps: int, masked: bool, num_states: int,
            num_small: int):
  """One CTA (i, q): cluster i's units, K-slice q. Every transfer between global and shared
  memory is a TMA copy (Mosaic GPU loads no WGMMA-layout tile from global memory)."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import mosaic_gpu as plgpu
  p, u, c = cfg.program, cfg.units, cfg.cluster
  nterms = len(p.terms)
  bars = _Barriers(nterms, p.num_gates)
  refs = list(refs)
  take = lambda n: [refs.pop(0) for _ in range(n)]
  lengths_g = take(1)[0] if masked else None
  xp_g, r_g, h0_g, small_g = take(4)
  states0_g = take(num_states)
  hs_g, part_g = take(2)
  seqs_g = take(num_states)
  r_s, h_s, o_s, part_s, xs_s, small_s, lengths_s, barrier, cluster_bar = refs
  i, q = lax.axis_index("clusters"), lax.axis_index("cluster")
  k_slice = h_s.shape[0]
  leader = q == 0
  sem = pl.get_global(plgpu.SemaphoreType.REGULAR) if cfg.barrier == "semaphore" else None

  def load(src, dst, index):
    plgpu.copy_gmem_to_smem(src, dst, barrier.at[index])
    plgpu.barrier_wait(barrier.at[index])

  def store(src, dst):
    plgpu.copy_smem_to_gmem(src, dst)

  def cluster_sync():
    plgpu.barrier_arrive(cluster_bar)
    plgpu.barrier_wait(cluster_bar)

  def signal():
    if sem is not None:
      pl.semaphore_signal(sem)

  def grid_wait(t):
    """h_{t-1} of every unit is in global memory (signalled once at the start, once a step)."""
    if not cfg.grid_barrier:
      return
    if sem is None:
      cluster_sync()
    else:
      pl.semaphore_wait(sem, (t + 1) * r_g.shape[0] * c, decrement=False)

  def store_h(h, t):
    o_s[...] = h.astype(o_s.dtype)
    plgpu.commit_smem()
    store(o_s, hs_g.at[t, pl.ds(i * u, u), :])

  for k in range(nterms):  # one 2-D copy per term (TMA strides up to 5 dimensions)
    plgpu.copy_gmem_to_smem(r_g.at[i, q, k], r_s.at[k], barrier.at[bars.r[k]])
  for k in range(nterms):
    plgpu.barrier_wait(barrier.at[bars.r[k]])

  def leader_init():
    if num_small:
      load(small_g.at[i], small_s, bars.misc)
    if masked:
      load(lengths_g, lengths_s, bars.misc)
    load(h0_g.at[i], o_s, bars.misc)
    store(o_s, hs_g.at[0, pl.ds(i * u, u), :])
    for k, s0 in enumerate(states0_g):
      load(s0.at[i], part_s.at[k], bars.misc)
    states = tuple(part_s[k] for k in range(num_states))
    plgpu.wait_smem_to_gmem(0, wait_read_only=False)
    return states

  zeros = tuple(jnp.zeros((u, h_s.shape[1]), f32) for _ in range(num_states))
  states0 = lax.cond(leader, leader_init, lambda: zeros)
  signal()

  def leader_step(t, states, parts):
    """Adds the peers' partial sums, runs the gate math, stores the states and h_t."""
    totals = list(parts)
    for peer in range(1, c):
      for k in range(nterms):
        plgpu.copy_gmem_to_smem(part_g.at[i, peer, k], part_s.at[k], barrier.at[bars.r[k]])
      for k in range(nterms):
        plgpu.barrier_wait(barrier.at[bars.r[k]])
        totals[k] = totals[k] + part_s[k]
    rprojs = [None] * p.num_gates
    for k, (_, gate) in enumerate(p.terms):
      rprojs[gate] = totals[k] if rprojs[gate] is None else rprojs[gate] + totals[k]
    for g in range(p.num_gates):
      plgpu.barrier_wait(barrier.at[bars.xs[g]])
    xs = tuple(xs_s[g].astype(f32) for g in range(p.num_gates))
    shape = xs[0].shape
    small = tuple(lax.broadcast_in_dim(small_s[k], shape, (0,)) for k in range(num_small))
    valid = None if lengths_s is None else t < lengths_s[...]
    new = p.step(small, states, xs, tuple(rprojs), valid)
    for k, s in enumerate(new):
      part_s[k] = s
    store_h(new[p.output_state], t + 1)
    for k, seq in enumerate(seqs_g):
      store(part_s.at[k], seq.at[t, i])
    plgpu.wait_smem_to_gmem(0, wait_read_only=False)
    return new

  def body(t, states):
    grid_wait(t)

    @pl.when(leader)
    def _():
      for g in range(p.num_gates):
        plgpu.copy_gmem_to_smem(xp_g.at[t, i, g], xs_s.at[g], barrier.at[bars.xs[g]])

    load(hs_g.at[t, pl.ds(q * k_slice, k_slice), :], h_s, bars.h)

    def matmuls(*accs):
      for k, acc in enumerate(accs):
        plgpu.wgmma(acc, r_s.at[k], h_s)
      plgpu.wgmma_wait(0)
      return tuple(acc[...] for acc in accs)

    parts = pl.run_scoped(matmuls, *[plgpu.ACC((u, h_s.shape[1]), f32)] * nterms)

    @pl.when(jnp.logical_not(leader))
    def _():
      for k in range(nterms):
        part_s[k] = parts[k]
      plgpu.commit_smem()
      for k in range(nterms):
        store(part_s.at[k], part_g.at[i, q, k])
      plgpu.wait_smem_to_gmem(0, wait_read_only=False)

    cluster_sync()  # every partial sum is in global memory
    states = lax.cond(leader, functools.partial(leader_step, t), lambda s, _: s, states, parts)
    signal()
    return states

  lax.fori_loop(jnp.int32(0), jnp.int32(num_steps), body, states0)


def _columns(a, clusters: int, units: int):
  """[..., B, N] -> [clusters, ..., units, B] (a cluster's units as a row block)."""
  *lead, b, _ = a.shape
  a = a.reshape(*lead, b, clusters, units)
  return jnp.moveaxis(jnp.swapaxes(a, -1, -3), -2, 0)


def _forward(cfg: PersistentConfig, xp, states0, weights, small, extras):
  """Kernel layout in (`programs.Packed`: xp [T, G, B, N], states0 [B, N], weights [N, N] per
  term, small rows [1, N]) -> (seqs [T, B, N] f32 per state, finals [B, N])."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  p, u, c = cfg.program, cfg.units, cfg.cluster
  t, g, b, n = xp.shape
  clusters = n // u
  if cfg.barrier == "cluster" and clusters != 1:
    raise ValueError(f"barrier='cluster' needs one cluster: hidden {n} == units {u}")
  w_dtype = weights[0].dtype
  k_slice = n // c
  nterms, ns = len(p.terms), len(states0)
  xp_k = jnp.moveaxis(_columns(xp, clusters, u), 1, 0)  # [T, clusters, G, units, B]
  # r[i, q, term] = w[q·K/C.., i·units..]ᵀ: [clusters, C, terms, units, K/C]
  r = jnp.stack([w.reshape(c, k_slice, clusters, u).transpose(2, 0, 3, 1) for w in weights], 2)
  h0 = _columns(states0[p.output_state].astype(w_dtype), clusters, u)
  # small rows [1, N] -> [clusters, small, units]
  small_k = jnp.stack([s[0].astype(f32).reshape(clusters, u) for s in small], 1) if small \
      else jnp.zeros((clusters, 1, u), f32)
  masked = extras.lengths is not None
  inputs = ([jnp.broadcast_to(extras.lengths[:, 0][None], (u, b)).astype(jnp.int32)]
            if masked else [])
  inputs += [xp_k, r, h0, small_k, *[_columns(s.astype(f32), clusters, u) for s in states0]]
  state_shape = jax.ShapeDtypeStruct((t, clusters, u, b), f32)
  out_type = (jax.ShapeDtypeStruct((t + 1, n, b), w_dtype),
              jax.ShapeDtypeStruct((clusters, c, nterms, u, b), f32),
              *[state_shape] * ns)
  kernel = plgpu.kernel(
      functools.partial(_kernel, cfg=cfg, num_steps=t, masked=masked, num_states=ns,
                        num_small=len(small)),
      out_type=out_type,
      scratch_types=[plgpu.SMEM((nterms, u, k_slice), w_dtype),
                     plgpu.SMEM((k_slice, b), w_dtype), plgpu.SMEM((u, b), w_dtype),
                     plgpu.SMEM((max(nterms, ns), u, b), f32),
                     plgpu.SMEM((g, u, b), xp.dtype),
                     plgpu.SMEM((max(len(small), 1), u), f32),
                     plgpu.SMEM((u, b), jnp.int32) if masked else None,
                     plgpu.Barrier(num_barriers=_Barriers(nterms, g).count),
                     plgpu.ClusterBarrier(collective_axes=("cluster",))],
      grid=(clusters,), grid_names=("clusters",), cluster=(c,), cluster_names=("cluster",),
      interpret=cfg.interpret or None,
      compiler_params=plgpu.CompilerParams(
          lowering_semantics=plgpu.LoweringSemantics.Warpgroup))
  _, _, *seqs = kernel(*inputs)
  # [T, clusters, units, B] -> [T, B, N]
  seqs = tuple(jnp.transpose(s, (0, 3, 1, 2)).reshape(t, b, n) for s in seqs)
  return seqs, tuple(s[-1] for s in seqs)


def _backward(cfg: PersistentConfig, xp, entering, d_seqs, d_finals, weights, small, extras):
  """The step kernel's backward, on the arrays padded to its hidden size (zero columns stay
  zero through the cell: no input, no weight, no state)."""
  n, wide = xp.shape[-1], cfg.backward_hidden
  last = lambda a: programs.pad_to(a, (*a.shape[:-1], wide))
  square = lambda w: programs.pad_to(w, (wide, wide))
  d_xp, d_rp, d_states0, d_small = step.scan_backward(
      cfg.backward, last(xp), tuple(map(last, entering)), tuple(map(last, d_seqs)),
      tuple(map(last, d_finals)), tuple(map(square, weights)), tuple(map(last, small)), extras)
  cut = lambda a: a[..., :n]
  return (cut(d_xp), None if d_rp is None else cut(d_rp), tuple(map(cut, d_states0)),
          tuple(map(cut, d_small)))


_persistent_op = autodiff.sequence_op(_forward, _backward)


def persistent_sequence(cfg: PersistentConfig, xp, states0, weights, small, lengths):
  """The persistent kernel as one differentiable sequence op, with the arguments and results
  of `sequence.fused_sequence` (no resets, dropout mask or zoneout: see `unsupported`)."""
  return _persistent_op(cfg, xp, tuple(states0), tuple(weights), tuple(small),
                        autodiff.Extras(lengths))
