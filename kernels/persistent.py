"""Persistent whole-sequence kernels, forward and backward, for NVIDIA Hopper GPUs (Pallas,
Mosaic GPU backend), for hidden sizes whose recurrent weights no single thread block can hold
(256-1024).

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

The gate math runs on transposed blocks ([units, B]: a cluster's units are the rows of the
accumulators), while h and the backward's gate cotangents, the `wgmma` B operands, are laid
out [B, K] (K-major, the only form tf32 takes, so f32 weights run too): the leader writes them
through a transposed view of shared memory (`_store_t`; Mosaic relayouts the registers).

The backward kernel runs time in reverse on the same grid, CTA (i, q) keeping the slice of Rᵀ

    rt_s [terms, units, K/C]: rows i·units.. of every recurrent weight (h's units), columns
                              q·K/C.. (the gates' units)

Step j: the leader runs the cell's backward (`Program.step_vjp`, the same as the other
kernels') for its units and stores the gate cotangents d xs[j] (and d rprojs[j] where they
differ, `separate_rprojs`); after the grid barrier each CTA multiplies its Rᵀ slice by its
K-slice of the gate cotangents (one `wgmma` per term into one accumulator), and the leader
adds the partial sums to d h, clips (grad_clip) and carries the result to step j - 1. The
recurrent projections the cell's backward reads are recomputed before the kernel as one
matmul over all steps, and the weights' gradients are one matmul after it
(`autodiff.sequence_op`). Where its shared memory does not fit (`backward_unsupported`), the
step kernel runs the backward in a scan instead, logged.

A cell with a matrix inside its gate math that multiplies a column-wise function of the step
(`Program.inner`: Cho's GRU, n = tanh(x_n + (r ⊙ h⁻) R_n)) runs each step in two stages: the
leader computes that input (r ⊙ h⁻) after the recurrent matmuls and stores it like h, and
after a second grid barrier every CTA multiplies it by its slice of the inner matrix, kept
beside its slices of R; the leader finishes the gate math with the sums. The backward mirrors
it: the second stage's backward, a grid barrier, the inner matrix's transposed matmul, the
first stage's backward, then the recurrent weights' as above; the inner matrix's gradient is
one matmul after the kernel.

The options are fused as in the other kernels (`Fused`): the forward's leader carries the
states entering the next step (states0 in its reset rows) and stores h_t as the next step's
matmuls read it, entered and times the recurrent dropout mask; zoneout weights (per step, or
constant among the gate math's vectors) go into `Program.step`. In the backward the leader
multiplies the transposed matmuls' d h by the mask and sends the reset rows' cotangent to
states0 (`autodiff.split_reset`). The forward stages the mask, the reset flags and the
per-step zoneout weights in shared memory (one f32 [units, B] tile each, which the plan
counts); the backward fetches them through its staging tiles.

Supported: column-separable cells (or staged ones) without head-wise recurrence whose every
recurrent weight reads h (the LSTM presets but FGR, without projection; both GRUs), bf16, f16 and
f32 weights (tf32 `wgmma`, JAX's default f32 matmul precision on GPUs too), lengths and every
option; `unsupported` and `plan` name what is not (sizes whose shared memory does not fit,
f32 ones first), and `kernels.rnn` then runs the step kernel, logged.

Both kernels with a grid of one cluster (`barrier="cluster"`) run in Pallas's GPU interpret
mode on a CPU, where the CTAs of a cluster run concurrently and races are detected.
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
TILES = 2  # f32 [units, B] tiles the backward stages at once


@dataclasses.dataclass(frozen=True)
class PersistentConfig:
  """Static arguments of the persistent kernels.

  program: the cell. units: hidden units per cluster. cluster: CTAs per cluster (C).
  grad_clip: the backward clips the cotangent each step passes to the previous one.
  backward: None (the persistent backward kernel) or the config of the step kernel that runs
    the backward pass instead (where the backward kernel does not fit: `backward_unsupported`),
    with backward_hidden, the hidden size it pads to (Triton's power of 2).
  barrier: "semaphore" (a global semaphore; any number of clusters) or "cluster" (one
    cluster; what GPU interpret mode runs). interpret: False or a `plgpu.InterpretGPUParams`.
  grid_barrier: False drops the grid barriers (one or two a step); only for the test that
    proves the race detector catches their absence.
  """
  program: Program
  units: int
  cluster: int
  grad_clip: float | None = None
  backward: step.StepConfig | None = None
  backward_hidden: int = 0
  barrier: str = "semaphore"
  interpret: Any = False
  grid_barrier: bool = True

  def __post_init__(self):
    if self.barrier not in BARRIERS:
      raise ValueError(f"barrier must be one of {BARRIERS}, got {self.barrier!r}")


def _keep_mode(keep) -> str | None:
  """How zoneout weights in the kernels' layout come: None, "const" [1, w] or "step"
  [T, B, w]."""
  return None if keep is None else ("const" if keep.ndim == 2 else "step")


@dataclasses.dataclass(frozen=True)
class Fused:
  """The per-call options a persistent kernel runs (static): resets, the recurrent dropout
  mask, and per state how its zoneout weights come: None, "const" (a row [1, w], read as one
  more of the gate math's vectors) or "step" (a [units, B] tile per step)."""
  resets: bool = False
  h_mask: bool = False
  keeps: tuple = ()

  @classmethod
  def of(cls, extras: autodiff.Extras) -> "Fused":
    keeps = tuple(map(_keep_mode, extras.keeps or ()))
    return cls(extras.resets is not None, extras.h_mask is not None, keeps)

  def count(self, mode: str) -> int:
    return sum(k == mode for k in self.keeps)

  def forward_tiles(self) -> int:
    """f32 [units, B] tiles the forward's leader keeps for the options: the mask (all
    steps), the next step's reset flags and the step's zoneout weights."""
    return self.h_mask + self.resets + self.count("step")


def unsupported(program: Program) -> str | None:
  """Why the persistent kernels cannot run this cell, or None."""
  if not program.separable and program.inner is None:
    return "its gate math mixes hidden columns (layer norm, a projection)"
  if program.heads > 1:
    return "its recurrence is head-wise"
  if any(src != program.output_state for src, _ in program.terms):
    return "a recurrent weight reads a state other than h (FGR)"
  return None


def padded_sizes(hidden: int, batch: int, units: int = UNITS) -> tuple[int, int]:
  """(hidden padded to whole clusters, batch padded to the wgmma N tile)."""
  return -(-hidden // units) * units, -(-batch // BATCH_TILE) * BATCH_TILE


def _slices(program: Program) -> int:
  """The matrices a CTA keeps a slice of: the recurrent weights and the inner matrix."""
  return len(program.terms) + (program.inner is not None)


def _num_vectors(program: Program) -> int:
  """The gate math's vectors (its `small` but the inner matrix)."""
  return len(program.small_names) - (program.inner is not None)


def _vectors_bytes(program: Program, fused: Fused, units: int) -> int:
  """The gate math's vectors and the constant zoneout weights, [units] f32 each."""
  return 4 * max(_num_vectors(program) + fused.count("const"), 1) * units


def smem_bytes(program: Program, padded_n: int, padded_b: int, cluster: int, weight_dtype,
               xp_dtype, masked: bool, fused: Fused = Fused(), units: int = UNITS) -> int:
  """The shared memory one CTA asks for (Mosaic adds under 1 KiB of barriers and alignment;
  the lowering tests read the exact figure): its slices of R (and the inner matrix), its
  K-slice of h (or of the inner matrix's input), the h_t tile, the
  partial sums (also the states' staging), the gates' inputs, the gate math's vectors, the
  lengths and the options' tiles."""
  w, x = jnp.dtype(weight_dtype).itemsize, jnp.dtype(xp_dtype).itemsize
  k, b = padded_n // cluster, padded_b
  terms, states = len(program.terms), len(program.state_widths(1, 1))
  return (w * (_slices(program) * units * k + k * b + units * b)
          + 4 * max(terms, states) * units * b
          + x * program.num_gates * units * b + _vectors_bytes(program, fused, units)
          + 4 * (masked + fused.forward_tiles()) * units * b)


def plan(program: Program, hidden: int, batch: int, weight_dtype, xp_dtype, masked: bool,
         fused: Fused = Fused(), num_sms: int = H100_SMS) -> tuple[int, str | None]:
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
    size = smem_bytes(program, padded_n, padded_b, cluster, weight_dtype, xp_dtype, masked,
                      fused)
    if size <= SMEM_PLAN_BYTES:
      return cluster, None
  options = 4 * fused.forward_tiles() * UNITS * padded_b
  return 0, (f"no cluster of <= {MAX_CLUSTER} CTAs fits hidden {hidden} (padded {padded_n}) at "
             f"batch {batch} in {num_sms} SMs with {SMEM_PLAN_BYTES} bytes of shared memory "
             f"per CTA" + (f" ({options} of them for the options)" if options else ""))


def separate_rprojs(program: Program, weight_dtype, xp_dtype) -> bool:
  """Whether the backward kernel writes d rprojs apart from d xs: unless they are equal
  (`same_grads`) and d xs, in xp's dtype, can be the transposed matmuls' operand."""
  return not program.same_grads or jnp.dtype(weight_dtype) != jnp.dtype(xp_dtype)


def backward_smem_bytes(program: Program, padded_n: int, padded_b: int, cluster: int,
                        weight_dtype, xp_dtype, masked: bool, fused: Fused = Fused(),
                        units: int = UNITS) -> int:
  """The shared memory one CTA of the backward kernel asks for: its slices of Rᵀ (and the
  inner matrix's transpose), its K-slice of the gate cotangents, the staged f32 tiles (the
  options' too), xs (then d xs), d rprojs (if separate) and the inner product's cotangent (if
  staged) on their way out, the gate math's vectors and the lengths."""
  w, x = jnp.dtype(weight_dtype).itemsize, jnp.dtype(xp_dtype).itemsize
  k, b = padded_n // cluster, padded_b
  gates = len(program.rproj_gates)
  separate = separate_rprojs(program, weight_dtype, xp_dtype)
  staging = (gates if separate else 0) + (program.inner is not None)  # [B, units] buffers
  return (w * (_slices(program) * units * k + gates * k * b + staging * units * b)
          + 4 * TILES * units * b + x * program.num_gates * units * b
          + _vectors_bytes(program, fused, units) + (4 * units * b if masked else 0))


def backward_unsupported(program: Program, hidden: int, batch: int, weight_dtype, xp_dtype,
                         masked: bool, cluster: int, fused: Fused = Fused()) -> str | None:
  """Why the persistent backward kernel cannot run with the forward's plan, or None."""
  padded_n, padded_b = padded_sizes(hidden, batch)
  size = backward_smem_bytes(program, padded_n, padded_b, cluster, weight_dtype, xp_dtype,
                             masked, fused)
  if size > SMEM_PLAN_BYTES:
    return (f"its backward needs {size} bytes of shared memory per CTA at hidden {hidden}, "
            f"batch {batch}, more than {SMEM_PLAN_BYTES}")
  return None


# -- the kernels ------------------------------------------------------------------------------

class _Barriers:
  """Indices of a kernel's TMA barriers, one range per group of buffers (`_Barriers(h=1,
  r=3)`: `.h` is range(0, 1), `.r` range(1, 4)); `count` in all."""

  def __init__(self, **sizes: int):
    self.count = 0
    for name, size in sizes.items():
      setattr(self, name, range(self.count, self.count + size))
      self.count += size


class _Sync:
  """How a kernel's CTAs wait for each other: the cluster barrier, and the grid barrier, a
  monotone count on a global semaphore that every CTA signals once per grid barrier (one a
  step, two for a staged cell), or, for a grid of one cluster, the cluster barrier."""

  def __init__(self, cfg: "PersistentConfig", cluster_bar, num_clusters):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import mosaic_gpu as plgpu
    self.cfg, self.cluster_bar, self.num_ctas = cfg, cluster_bar, num_clusters * cfg.cluster
    self.sem = (pl.get_global(plgpu.SemaphoreType.REGULAR) if cfg.barrier == "semaphore"
                else None)

  def cluster(self):
    from jax.experimental.pallas import mosaic_gpu as plgpu
    plgpu.barrier_arrive(self.cluster_bar)
    plgpu.barrier_wait(self.cluster_bar)

  def signal(self):
    from jax.experimental import pallas as pl
    if self.sem is not None:
      pl.semaphore_signal(self.sem)

  def grid(self, signals):
    """Waits until every CTA has signalled `signals` times."""
    from jax.experimental import pallas as pl
    if not self.cfg.grid_barrier:
      return
    if self.sem is None:
      self.cluster()
    else:
      pl.semaphore_wait(self.sem, signals * self.num_ctas, decrement=False)


def _issue(barrier, indices, copies):
  """Starts TMA copies [(src in global memory, dst in shared memory)], copy m arriving at
  barrier indices[m]. The threads' earlier reads of shared memory are committed first: a TMA
  write must not overtake a read of the buffer it overwrites."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  if not copies:
    return
  plgpu.commit_smem()
  for index, (src, dst) in zip(indices[:len(copies)], copies, strict=True):
    plgpu.copy_gmem_to_smem(src, dst, barrier.at[index])


def _wait(barrier, indices):
  from jax.experimental.pallas import mosaic_gpu as plgpu
  for index in indices:
    plgpu.barrier_wait(barrier.at[index])


def _load(barrier, indices, copies):
  """`_issue`, then waits for every copy."""
  _issue(barrier, indices, copies)
  _wait(barrier, indices[:len(copies)])


def _store_t(ref, value):
  """value [units, B] (the gate math's layout) into ref [B, units] in shared memory: the
  K-major form of a `wgmma` B operand, the only one tf32 takes."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  ref.T[...] = plgpu.layout_cast(value, plgpu.Layout.WGMMA_TRANSPOSED).astype(ref.dtype)


def _load_t(ref):
  """ref [B, units] in shared memory -> [units, B] in the gate math's layout."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  value = plgpu.layout_cast(ref.T[...], plgpu.Layout.WGMMA_TRANSPOSED)
  return plgpu.layout_cast(value, plgpu.Layout.WGMMA)


def _gate_math_extras(program: Program, small_s, lengths_s, t, shape):
  """What the gate math reads besides states and gates: its `small`, the vectors [units]
  broadcast to `shape` [units, B] (None for the inner matrix, which it does not read), and
  `valid` at step t (None without lengths)."""
  small = [lax.broadcast_in_dim(small_s[k], shape, (0,)) for k in range(_num_vectors(program))]
  if program.inner is not None:
    small.insert(program.inner, None)
  return tuple(small), None if lengths_s is None else t < lengths_s[...]


def _zoneout(fused: Fused, small_s, num_small: int, step_tiles, shape):
  """The zoneout weights per state as `Program.step` reads them (None without zoneout): the
  constant ones broadcast from the vectors after the gate math's own, the per-step ones from
  `step_tiles` [units, B] in order."""
  if not fused.keeps:
    return None
  consts, tiles = iter(range(num_small, num_small + fused.count("const"))), iter(step_tiles)
  take = {None: lambda: None, "step": lambda: next(tiles),
          "const": lambda: lax.broadcast_in_dim(small_s[next(consts)], shape, (0,))}
  return tuple(take[mode]() for mode in fused.keeps)


def _forward_barriers(program: Program, fused: Fused) -> _Barriers:
  """The forward's TMA barriers: h's K-slice, the rest, R's terms, xs's gates, the options'
  per-step tiles."""
  return _Barriers(h=1, misc=1, r=_slices(program), xs=program.num_gates,
                   opts=fused.resets + fused.count("step"))


def _forward_kernel(*refs, cfg: PersistentConfig, num_steps: int, masked: bool,
                    num_states: int, num_small: int, fused: Fused):
  """One CTA (i, q): cluster i's units, K-slice q. Every transfer between global and shared
  memory is a TMA copy (Mosaic GPU loads no WGMMA-layout tile from global memory). With
  resets the leader carries the states entering the next step and keeps states0; h_{t} is
  stored as the matmuls read it (entered, times the dropout mask). A staged cell's step has
  a second matmul, on the inner matrix's input the leaders store (vs_g), behind a second
  grid barrier."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import mosaic_gpu as plgpu
  p, u, c = cfg.program, cfg.units, cfg.cluster
  nterms, staged = len(p.terms), p.inner is not None
  stages = 1 + staged  # grid barriers per step
  bars = _forward_barriers(p, fused)
  refs = list(refs)
  take = lambda n: [refs.pop(0) for _ in range(n)]
  lengths_g = take(1)[0] if masked else None
  xp_g, r_g, h0_g, small_g = take(4)
  states0_g = take(num_states)
  resets_g, mask_g, keeps_g = (take(1)[0] if on else None for on in (
      fused.resets, fused.h_mask, fused.count("step")))
  hs_g, part_g = take(2)
  seqs_g = take(num_states)
  vs_g = take(1)[0] if staged else None
  r_s, h_s, o_s, part_s, xs_s, small_s, lengths_s, opts_s, barrier, cluster_bar = refs
  i, q = lax.axis_index("clusters"), lax.axis_index("cluster")
  batch, k_slice = h_s.shape
  leader = q == 0
  sync = _Sync(cfg, cluster_bar, r_g.shape[0])
  # opts_s: the mask, the next step's reset flags, the step's zoneout weights
  slots = iter(range(fused.forward_tiles()))
  mask_slot, reset_slot = (next(slots) if on else None for on in (fused.h_mask, fused.resets))
  keep_slots = list(slots)

  def store(src, dst):
    plgpu.copy_smem_to_gmem(src, dst)

  def store_h(h, t):
    _store_t(o_s, h)
    plgpu.commit_smem()
    store(o_s, hs_g.at[t, :, pl.ds(i * u, u)])

  # one 2-D copy per matrix (TMA strides up to 5 dimensions)
  _load(barrier, bars.r, [(r_g.at[i, q, k], r_s.at[k]) for k in range(_slices(p))])

  def leader_init():
    if num_small or fused.count("const"):
      _load(barrier, bars.misc, [(small_g.at[i], small_s)])
    if masked:
      _load(barrier, bars.misc, [(lengths_g, lengths_s)])
    if fused.h_mask:
      _load(barrier, bars.misc, [(mask_g.at[i], opts_s.at[mask_slot])])
    _load(barrier, bars.misc, [(h0_g.at[i], o_s)])
    store(o_s, hs_g.at[0, :, pl.ds(i * u, u)])
    for k, s0 in enumerate(states0_g):
      _load(barrier, bars.misc, [(s0.at[i], part_s.at[k])])
    states = tuple(part_s[k] for k in range(num_states))
    plgpu.wait_smem_to_gmem(0, wait_read_only=False)
    return states, states if fused.resets else ()

  zeros = tuple(jnp.zeros((u, batch), f32) for _ in range(num_states))
  carry0 = lax.cond(leader, leader_init, lambda: (zeros, zeros if fused.resets else ()))
  sync.signal()

  def matmuls(slots, operand):
    """This CTA's partial sums r_s[slot] @ operand (K-major [B, K/C] in shared memory) for
    each slot, f32 [units, B]."""
    def run(*accs):
      for k, acc in zip(slots, accs, strict=True):
        plgpu.wgmma(acc, r_s.at[k], operand.T)
      plgpu.wgmma_wait(0)
      return tuple(acc[...] for acc in accs)
    return pl.run_scoped(run, *[plgpu.ACC((u, batch), f32)] * len(slots))

  def send(parts):
    """The peers store their partial sums; after the cluster barrier all are in global
    memory."""
    @pl.when(jnp.logical_not(leader))
    def _():
      for k, part in enumerate(parts):
        part_s[k] = part
      plgpu.commit_smem()
      for k in range(len(parts)):
        store(part_s.at[k], part_g.at[i, q, k])
      plgpu.wait_smem_to_gmem(0, wait_read_only=False)

    sync.cluster()

  def peer_sums(parts):
    """The leader's partial sums plus every peer's."""
    totals = list(parts)
    for peer in range(1, c):
      _load(barrier, bars.r, [(part_g.at[i, peer, k], part_s.at[k]) for k in range(len(parts))])
      totals = [total + part_s[k] for k, total in enumerate(totals)]
    return tuple(totals)

  def rprojs_of(totals):
    rprojs = [None] * p.num_gates
    for k, (_, gate) in enumerate(p.terms):
      rprojs[gate] = totals[k] if rprojs[gate] is None else rprojs[gate] + totals[k]
    return tuple(rprojs)

  def gate_inputs(t):
    """xs, small, valid and the zoneout weights of step t (their copies waited for)."""
    xs = tuple(xs_s[g].astype(f32) for g in range(p.num_gates))
    small, valid = _gate_math_extras(p, small_s, lengths_s, t, xs[0].shape)
    keeps = _zoneout(fused, small_s, num_small, [opts_s[m] for m in keep_slots], xs[0].shape)
    return xs, small, valid, keeps

  def projections(parts):
    """The recurrent projections' partial sums added up, once xs and the options' tiles of
    the step have arrived."""
    totals = peer_sums(parts)
    _wait(barrier, bars.xs)
    _wait(barrier, bars.opts)
    return totals

  def leader_inner(t, carry, parts):
    """A staged cell's first stage: the recurrent projections, and the inner matrix's input
    for this cluster's units stored (K-major) for every CTA's second matmul."""
    totals = projections(parts)
    xs, small, _, _ = gate_inputs(t)
    _store_t(o_s, p.inner_input(small, carry[0], xs, rprojs_of(totals)))
    plgpu.commit_smem()
    store(o_s, vs_g.at[t, :, pl.ds(i * u, u)])
    plgpu.wait_smem_to_gmem(0, wait_read_only=False)
    return totals

  def leader_step(t, carry, totals, inner):
    """Runs the gate math (given the recurrent projections and, staged, the inner matrix's
    product), stores the states and h_t."""
    states, states0 = carry
    xs, small, valid, keeps = gate_inputs(t)
    new = p.step(small, states, xs, rprojs_of(totals), valid, keeps, inner)
    for k, s in enumerate(new):
      part_s[k] = s
    entering = p.enter(new, states0, opts_s[reset_slot] > 0 if fused.resets else None)
    mask = opts_s[mask_slot] if fused.h_mask else None
    store_h(p.rinputs(entering, mask)[p.output_state], t + 1)
    for k, seq in enumerate(seqs_g):
      store(part_s.at[k], seq.at[t, i])
    plgpu.wait_smem_to_gmem(0, wait_read_only=False)
    return entering, states0

  def leader_last(t, carry, parts):
    """An unstaged cell's step after its recurrent matmuls."""
    return leader_step(t, carry, projections(parts), None)

  def leader_second(t, carry, totals, part):
    """A staged cell's second stage, after the inner matrix's matmul."""
    return leader_step(t, carry, totals, peer_sums([part])[0])

  keep = lambda value, *_: value

  def body(t, carry):
    sync.grid(stages * t + 1)  # h_{t-1} of every unit is in global memory

    @pl.when(leader)
    def _():
      _issue(barrier, bars.xs, [(xp_g.at[t, i, g], xs_s.at[g]) for g in range(p.num_gates)])
      _issue(barrier, bars.opts,
             ([(resets_g.at[t], opts_s.at[reset_slot])] if fused.resets else [])
             + [(keeps_g.at[t, i, m], opts_s.at[slot]) for m, slot in enumerate(keep_slots)])

    _load(barrier, bars.h, [(hs_g.at[t, :, pl.ds(q * k_slice, k_slice)], h_s)])
    parts = matmuls(range(nterms), h_s)
    send(parts)
    if not staged:
      carry = lax.cond(leader, functools.partial(leader_last, t), keep, carry, parts)
    else:
      totals = lax.cond(leader, functools.partial(leader_inner, t), lambda _, parts: parts,
                        carry, parts)
      sync.signal()
      sync.grid(stages * t + 2)  # the inner matrix's input of every unit is in global memory
      _load(barrier, bars.h, [(vs_g.at[t, :, pl.ds(q * k_slice, k_slice)], h_s)])
      (part,) = matmuls([nterms], h_s)
      send([part])
      carry = lax.cond(leader, functools.partial(leader_second, t), keep, carry, totals, part)
    sync.signal()
    return carry

  lax.fori_loop(jnp.int32(0), jnp.int32(num_steps), body, carry0)


def _columns(a, clusters: int, units: int):
  """[..., B, N] -> [clusters, ..., units, B] (a cluster's units as a row block)."""
  *lead, b, _ = a.shape
  a = a.reshape(*lead, b, clusters, units)
  return jnp.moveaxis(jnp.swapaxes(a, -1, -3), -2, 0)


def _row_blocks(a, clusters: int, units: int):
  """[..., B, N] -> [clusters, ..., B, units] (a cluster's units as a column block: the
  K-major layout of h and the gate cotangents)."""
  *lead, b, _ = a.shape
  return jnp.moveaxis(a.reshape(*lead, b, clusters, units), -2, 0)


def _per_step(a, clusters: int, units: int):
  """[T, X, B, N] -> [T, clusters, X, units, B]: one step's tiles of a cluster together."""
  return jnp.moveaxis(_columns(a, clusters, units), 1, 0)


def _small_columns(small, clusters: int, units: int):
  """The gate math's rows [1, N] -> [clusters, small, units] (one zero row if none)."""
  if not small:
    return jnp.zeros((clusters, 1, units), f32)
  return jnp.stack([s[0].astype(f32).reshape(clusters, units) for s in small], 1)


def _matrices(program: Program, weights, small) -> tuple:
  """The matrices the CTAs keep slices of: the recurrent weights, then the inner matrix (in
  the weights' dtype)."""
  if program.inner is None:
    return tuple(weights)
  return (*weights, small[program.inner].astype(weights[0].dtype))


def _vectors_of(program: Program, small) -> tuple:
  """The gate math's vectors (or their cotangents): its `small` but the inner matrix."""
  return tuple(a for k, a in enumerate(small) if k != program.inner)


def _row_tiles(a, units: int):
  """Per-row values [..., B, 1] -> [..., units, B], what the gate math compares with."""
  return jnp.broadcast_to(jnp.swapaxes(a, -1, -2), (*a.shape[:-2], units, a.shape[-2]))


def _keeps_of(extras: autodiff.Extras, mode: str) -> list:
  """The zoneout weights given as `mode` ("const" [1, w] or "step" [T, B, w])."""
  return [k for k in extras.keeps or () if _keep_mode(k) == mode]


def _vectors(small, extras: autodiff.Extras, clusters: int, units: int):
  """The gate math's vectors, then the constant zoneout weights: [clusters, count, units]."""
  return _small_columns((*small, *_keeps_of(extras, "const")), clusters, units)


def _option_inputs(extras: autodiff.Extras, resets, clusters: int, units: int) -> list:
  """The options' kernel inputs, each where it is on: the reset flags the kernel reads at
  each step (`resets` [T, B, 1]) as f32 [T, units, B], the dropout mask [clusters, units, B]
  and the per-step zoneout weights [T, clusters, count, units, B]."""
  inputs = [] if resets is None else [_row_tiles(resets.astype(f32), units)]
  if extras.h_mask is not None:
    inputs.append(_columns(extras.h_mask.astype(f32), clusters, units))
  step_keeps = _keeps_of(extras, "step")
  if step_keeps:
    inputs.append(_per_step(jnp.stack(step_keeps, 1).astype(f32), clusters, units))
  return inputs


def _launch(cfg: PersistentConfig, clusters: int) -> dict:
  """`plgpu.kernel`'s grid, cluster and compiler arguments, the same for both kernels."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  if cfg.barrier == "cluster" and clusters != 1:
    raise ValueError(f"barrier='cluster' needs one cluster, got {clusters} (hidden "
                     f"{clusters * cfg.units}, units {cfg.units})")
  return dict(grid=(clusters,), grid_names=("clusters",), cluster=(cfg.cluster,),
              cluster_names=("cluster",), interpret=cfg.interpret or None,
              compiler_params=plgpu.CompilerParams(
                  lowering_semantics=plgpu.LoweringSemantics.Warpgroup))


def _forward(cfg: PersistentConfig, xp, states0, weights, small, extras):
  """Kernel layout in (`programs.Packed`: xp [T, G, B, N], states0 [B, N], weights [N, N] per
  term, small rows [1, N]) -> (seqs [T, B, N] f32 per state, finals [B, N])."""
  from jax.experimental.pallas import mosaic_gpu as plgpu
  p, u, c = cfg.program, cfg.units, cfg.cluster
  t, g, b, n = xp.shape
  clusters = n // u
  w_dtype = weights[0].dtype
  k_slice = n // c
  nterms, ns = len(p.terms), len(states0)
  xp_k = _per_step(xp, clusters, u)  # [T, clusters, G, units, B]
  # r[i, q, m] = w_m[q·K/C.., i·units..]ᵀ: [clusters, C, matrices, units, K/C]
  r = jnp.stack([w.reshape(c, k_slice, clusters, u).transpose(2, 0, 3, 1)
                 for w in _matrices(p, weights, small)], 2)
  vectors = _vectors_of(p, small)
  fused = Fused.of(extras)
  # what step 0's matmuls read; step t's leader stores step t + 1's (the state entering it)
  h0 = _row_blocks(p.rinputs(states0, extras.h_mask)[p.output_state].astype(w_dtype), clusters,
                  u)
  next_resets = None if extras.resets is None else jnp.concatenate(
      [extras.resets[1:], jnp.zeros_like(extras.resets[:1])])
  masked = extras.lengths is not None
  inputs = [_row_tiles(extras.lengths, u)] if masked else []
  inputs += [xp_k, r, h0, _vectors(vectors, extras, clusters, u),
             *[_columns(s.astype(f32), clusters, u) for s in states0],
             *_option_inputs(extras, next_resets, clusters, u)]
  state_shape = jax.ShapeDtypeStruct((t, clusters, u, b), f32)
  out_type = (jax.ShapeDtypeStruct((t + 1, b, n), w_dtype),
              jax.ShapeDtypeStruct((clusters, c, nterms, u, b), f32),
              *[state_shape] * ns,
              *([jax.ShapeDtypeStruct((t, b, n), w_dtype)] if p.inner is not None else []))
  kernel = plgpu.kernel(
      functools.partial(_forward_kernel, cfg=cfg, num_steps=t, masked=masked, num_states=ns,
                        num_small=len(vectors), fused=fused),
      out_type=out_type,
      scratch_types=[plgpu.SMEM((_slices(p), u, k_slice), w_dtype),
                     plgpu.SMEM((b, k_slice), w_dtype), plgpu.SMEM((b, u), w_dtype),
                     plgpu.SMEM((max(nterms, ns), u, b), f32),
                     plgpu.SMEM((g, u, b), xp.dtype),
                     plgpu.SMEM((max(len(vectors) + fused.count("const"), 1), u), f32),
                     plgpu.SMEM((u, b), jnp.int32) if masked else None,
                     plgpu.SMEM((fused.forward_tiles(), u, b), f32)
                     if fused.forward_tiles() else None,
                     plgpu.Barrier(num_barriers=_forward_barriers(p, fused).count),
                     plgpu.ClusterBarrier(collective_axes=("cluster",))],
      **_launch(cfg, clusters))
  _, _, *seqs = kernel(*inputs)
  # [T, clusters, units, B] -> [T, B, N]
  seqs = tuple(jnp.transpose(s, (0, 3, 1, 2)).reshape(t, b, n) for s in seqs[:ns])
  return seqs, tuple(s[-1] for s in seqs)


def _without_add_any(fun):
  """`fun` traced and replayed with the cotangent sums of JAX's transposition (add_any, which
  Mosaic GPU does not lower) as plain adds, so a kernel can run a `jax.vjp`. Nested jits are
  replayed too; any other primitive is bound as traced (a cell's gate math has no control
  flow)."""
  from jax.extend import core as jex

  def run(jaxpr, consts, args):
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jex.Literal) else env[v]
    for eqn in jaxpr.eqns:
      ins = [read(v) for v in eqn.invars]
      if eqn.primitive is jex.primitives.add_jaxvals_p:
        outs = [lax.add(*ins)]
      elif eqn.primitive is jex.primitives.jit_p:
        inner = eqn.params["jaxpr"]
        outs = run(inner.jaxpr, inner.consts, ins)
      else:
        outs = eqn.primitive.bind(*ins, **eqn.params)
        outs = outs if eqn.primitive.multiple_results else [outs]
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  def wrapped(*args):
    closed, shapes = jax.make_jaxpr(fun, return_shape=True)(*args)
    outs = run(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(shapes), outs)

  return wrapped


def _backward_barriers(program: Program) -> _Barriers:
  """The backward's TMA barriers: the rest, the staged tiles, Rᵀ's terms, xs's gates, the
  gate cotangents' K-slices."""
  return _Barriers(misc=1, tiles=TILES, r=_slices(program), xs=program.num_gates,
                   d=len(program.rproj_gates))


def _backward_kernel(*refs, cfg: PersistentConfig, num_steps: int, masked: bool,
                     num_states: int, num_small: int, separate: bool, fused: Fused):
  """One CTA (i, q), time reversed. Step j: the leader runs the cell's backward for its units
  (the cotangent of the new states: the carried one plus d seqs[j]) and stores d xs[j] and,
  if `separate`, d rprojs[j] (else d xs is read in their place); after the grid barrier every
  CTA multiplies its slice of Rᵀ by its K-slice of those gate cotangents, and the leader adds
  the peers' partial sums to d h (times the dropout mask), sends the reset rows' cotangent to
  states0 and clips the rest: the cotangent carried to step j - 1.

  A staged cell (an inner matrix) runs its second stage's backward first, stores the inner
  product's cotangent, and after a grid barrier every CTA multiplies its slice of the inner
  matrix's transpose by it; the leader then runs the first stage's backward with the sums."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import mosaic_gpu as plgpu
  p, u, c = cfg.program, cfg.units, cfg.cluster
  gates, nterms, staged = p.rproj_gates, len(p.terms), p.inner is not None
  stages = 1 + staged  # grid barriers per step
  bars = _backward_barriers(p)
  refs = list(refs)
  take = lambda n: [refs.pop(0) for _ in range(n)]
  lengths_g = take(1)[0] if masked else None
  xp_g, rt_g, entering_g, d_seqs_g, rprojs_g, d_finals_g, small_g = take(7)
  resets_g, mask_g, keeps_g, inner_g = (take(1)[0] if on else None for on in (
      fused.resets, fused.h_mask, fused.count("step"), staged))
  d_xp_g = take(1)[0]
  d_rp_g = take(1)[0] if separate else None
  d_states0_g, d_small_g, part_g = take(3)
  d_inner_g = take(1)[0] if staged else None
  rt_s, d_s, tiles_s, xs_s, d_rp_s, d_inner_s, small_s, lengths_s, barrier, cluster_bar = refs
  i, q = lax.axis_index("clusters"), lax.axis_index("cluster")
  b, k_slice = d_s.shape[1:]
  leader = q == 0
  sync = _Sync(cfg, cluster_bar, rt_g.shape[0])

  def fetch(srcs):
    """[units, B] f32 tiles from global memory, TILES at a time through tiles_s."""
    out = []
    for start in range(0, len(srcs), TILES):
      group = srcs[start:start + TILES]
      _load(barrier, bars.tiles, [(src, tiles_s.at[m]) for m, src in enumerate(group)])
      out += [tiles_s[m] for m in range(len(group))]
    return out

  def put(values, dsts):
    """[units, B] f32 values to global memory, TILES at a time through tiles_s."""
    for start in range(0, len(values), TILES):
      group = list(zip(values[start:start + TILES], dsts[start:start + TILES]))
      for m, (value, _) in enumerate(group):
        tiles_s[m] = value
      plgpu.commit_smem()
      for m, (_, dst) in enumerate(group):
        plgpu.copy_smem_to_gmem(tiles_s.at[m], dst)
      plgpu.wait_smem_to_gmem(0, wait_read_only=False)

  _load(barrier, bars.r, [(rt_g.at[i, q, k], rt_s.at[k]) for k in range(_slices(p))])

  zeros = lambda count: tuple(jnp.zeros((u, b), f32) for _ in range(count))
  keep = lambda value, *_: value

  def leader_init():
    if num_small or fused.count("const"):
      _load(barrier, bars.misc, [(small_g.at[i], small_s)])
    if masked:
      _load(barrier, bars.misc, [(lengths_g, lengths_s)])
    return tuple(fetch([d_finals_g.at[i, k] for k in range(num_states)]))

  d_finals = lax.cond(leader, leader_init, lambda: zeros(num_states))

  def step_inputs(j, with_keeps=True):
    """The entering states, xs (already copied), rprojs, small, valid and the zoneout
    weights of step j."""
    entering = tuple(fetch([entering_g.at[j, i, k] for k in range(num_states)]))
    rprojs = [None] * p.num_gates
    for g, r in zip(gates, fetch([rprojs_g.at[j, i, m] for m in range(len(gates))])):
      rprojs[g] = r
    xs = tuple(_load_t(xs_s.at[g]).astype(f32) for g in range(p.num_gates))
    small, valid = _gate_math_extras(p, small_s, lengths_s, j, (u, b))
    keeps = _zoneout(fused, small_s, num_small,
                     fetch([keeps_g.at[j, i, m] for m in range(fused.count("step"))]),
                     (u, b)) if with_keeps else None
    return entering, xs, tuple(rprojs), small, valid, keeps

  def d_new_at(j, d_states):
    """Copies xs of step j; the cotangent of its new states."""
    _issue(barrier, bars.xs, [(xp_g.at[j, i, g], xs_s.at[g]) for g in range(p.num_gates)])
    d_seq = fetch([d_seqs_g.at[j, i, k] for k in range(num_states)])
    _wait(barrier, bars.xs)
    return tuple(d + s for d, s in zip(d_states, d_seq))

  def store_t(values, buffers, dst):
    """[units, B] values to dst(m) [B, units] (K-major) through shared memory buffers."""
    for m, value in enumerate(values):
      _store_t(buffers.at[m], value)
    plgpu.commit_smem()
    for m in range(len(values)):
      plgpu.copy_smem_to_gmem(buffers.at[m], dst(m))
    plgpu.wait_smem_to_gmem(0, wait_read_only=False)

  def store_gate_grads(j, d_xs, d_rp):
    store_t(d_xs, xs_s, lambda g: d_xp_g.at[j, g, :, pl.ds(i * u, u)])
    if separate:
      store_t([d_rp[g] for g in gates], d_rp_s, lambda m: d_rp_g.at[j, m, :, pl.ds(i * u, u)])

  def leader_cell(j, d_states, d_small):
    """The cell's backward at step j for this cluster's units; stores d xs and d rprojs."""
    d_new = d_new_at(j, d_states)
    entering, xs, rprojs, small, valid, keeps = step_inputs(j)
    d_sm, d_st, d_xs, d_rp = _without_add_any(p.step_vjp)(small, entering, xs, rprojs, valid,
                                                           d_new, keeps)
    store_gate_grads(j, d_xs, d_rp)
    return tuple(d_st), tuple(a + d for a, d in zip(d_small, _vectors_of(p, d_sm)))

  def leader_second_stage(j, d_states):
    """A staged cell's second stage backward at step j; stores the inner product's cotangent
    -> the partial cotangents (d states, d xs, d rprojs of `gates`, d vectors)."""
    d_new = d_new_at(j, d_states)
    entering, xs, rprojs, small, valid, keeps = step_inputs(j)
    (inner,) = fetch([inner_g.at[j, i]])
    d_sm, d_st, d_xs, d_rp, d_inner = _without_add_any(p.inner_step_vjp)(
        small, entering, xs, rprojs, inner, valid, d_new, keeps)
    store_t([d_inner], d_inner_s, lambda _: d_inner_g.at[j, :, pl.ds(i * u, u)])
    return (tuple(d_st), tuple(d_xs), tuple(d_rp[g] for g in gates),
            _vectors_of(p, d_sm))

  def leader_first_stage(j, d_states, d_small, partial, part):
    """A staged cell's first stage backward at step j, given its inner matrix's input's
    cotangent (the partial sums of the transposed matmul); stores d xs and d rprojs."""
    d_st, d_xs, d_rp, d_sm = partial
    d_input = sum(fetch([part_g.at[i, peer] for peer in range(1, c)]), part)
    entering, xs, rprojs, small, _, _ = step_inputs(j, with_keeps=False)
    d_sm1, d_st1, d_xs1, d_rp1 = _without_add_any(p.inner_input_vjp)(small, entering, xs,
                                                                      rprojs, d_input)
    add = lambda a, d: a if d is None else a + d
    d_xs = tuple(map(add, d_xs, d_xs1))
    d_rp = [None] * p.num_gates
    for g, d in zip(gates, partial[2]):
      d_rp[g] = add(d, d_rp1[g])
    store_gate_grads(j, d_xs, d_rp)
    d_sm = tuple(map(add, d_sm, _vectors_of(p, d_sm1)))
    return tuple(map(add, d_st, d_st1)), tuple(a + d for a, d in zip(d_small, d_sm))

  def transposed(copies, pairs):
    """This CTA's partial sum Σ rt_s[slot] @ d_s[m]ᵀ over `pairs` (slot, m), once `copies`
    [(source [B, N] in global memory, m)] have their K-slices in d_s."""
    _load(barrier, bars.d, [(src.at[:, pl.ds(q * k_slice, k_slice)], d_s.at[m])
                            for src, m in copies])

    def matmuls(acc):
      for slot, m in pairs:
        plgpu.wgmma(acc, rt_s.at[slot], d_s.at[m].T)
      plgpu.wgmma_wait(0)
      return acc[...]

    return pl.run_scoped(matmuls, plgpu.ACC((u, b), f32))

  def send(part):
    """The peers store their partial sums; after the cluster barrier all are in global
    memory."""
    @pl.when(jnp.logical_not(leader))
    def _():
      put([part], [part_g.at[i, q]])

    sync.cluster()

  def leader_carry(j, carry, part):
    """Adds the partial sums of d h (times the mask) to the cell's own cotangents of the
    states entering step j: step j - 1's, clipped, or in reset rows states0's."""
    d_states, d_resets = carry
    tiles = fetch([part_g.at[i, peer] for peer in range(1, c)]
                  + ([mask_g.at[i]] if fused.h_mask else [])
                  + ([resets_g.at[j]] if fused.resets else []))
    reset = tiles.pop() > 0 if fused.resets else None
    mask = tiles.pop() if fused.h_mask else None
    d_h = sum(tiles, part)
    d = list(d_states)
    d[p.output_state] = d[p.output_state] + (d_h if mask is None else d_h * mask)
    return autodiff.split_reset(tuple(d), d_resets, reset, cfg.grad_clip)

  def body(s, carry):
    d_states, d_small, d_resets = carry
    j = num_steps - 1 - s
    if not staged:
      d_states, d_small = lax.cond(leader, functools.partial(leader_cell, j),
                                   lambda d, sm: (d, sm), d_states, d_small)
    else:
      partial = lax.cond(leader, functools.partial(leader_second_stage, j),
                         lambda _: (zeros(num_states), zeros(p.num_gates), zeros(len(gates)),
                                    zeros(num_small)), d_states)
      sync.signal()
      sync.grid(stages * s + 1)  # step j's inner cotangent of every unit is in global memory
      part = transposed([(d_inner_g.at[j], 0)], [(nterms, 0)])
      send(part)
      d_states, d_small = lax.cond(leader, functools.partial(leader_first_stage, j),
                                   lambda d, sm, *_: (d, sm), d_states, d_small, partial, part)
    sync.signal()
    sync.grid(stages * s + stages)  # step j's gate cotangents of every unit are in memory
    sources = [d_rp_g.at[j, m] if separate else d_xp_g.at[j, g] for m, g in enumerate(gates)]
    part = transposed([(src, m) for m, src in enumerate(sources)],
                      [(k, gates.index(gate)) for k, (_, gate) in enumerate(p.terms)])
    send(part)
    d_states, d_resets = lax.cond(leader, functools.partial(leader_carry, j), keep,
                                  (d_states, d_resets), part)
    return d_states, d_small, d_resets

  d_states, d_small, d_resets = lax.fori_loop(
      jnp.int32(0), jnp.int32(num_steps), body,
      (d_finals, zeros(num_small), zeros(num_states) if fused.resets else ()))
  d_states0 = tuple(a + b for a, b in zip(d_states, d_resets)) if fused.resets else d_states

  @pl.when(leader)
  def _():
    put([*d_states0, *d_small], [*[d_states0_g.at[i, k] for k in range(num_states)],
                                 *[d_small_g.at[i, k] for k in range(num_small)]])


def _backward(cfg: PersistentConfig, xp, entering, d_seqs, d_finals, weights, small, extras):
  """Kernel layout in (as `_forward`, with the states entering each step and the cotangents of
  seqs and finals) -> (d xp, d rprojs [T, Gr, B, N] or None, d states0, d small). The
  recurrent projections the cell's backward reads (and a staged cell's inner product) are
  recomputed outside the serial loop, as one matmul over all steps, and the inner matrix's
  gradient is one matmul after it."""
  if cfg.backward is not None:
    return _step_backward(cfg, xp, entering, d_seqs, d_finals, weights, small, extras)
  from jax.experimental.pallas import mosaic_gpu as plgpu
  p, u, c = cfg.program, cfg.units, cfg.cluster
  t, g, b, n = xp.shape
  clusters, k_slice = n // u, n // c
  w_dtype, gates, staged = weights[0].dtype, p.rproj_gates, p.inner is not None
  separate = separate_rprojs(p, w_dtype, xp.dtype)
  vectors = _vectors_of(p, small)
  ns, nv = len(entering), len(vectors)
  fused = Fused.of(extras)
  per_step = lambda a: _per_step(a, clusters, u)
  mask = None if extras.h_mask is None else extras.h_mask[None]
  rprojs = p.rprojs(p.rinputs(entering, mask), weights)
  matrices = _matrices(p, weights, small)
  inputs = [_row_tiles(extras.lengths, u)] if extras.lengths is not None else []
  inputs += [jnp.moveaxis(_row_blocks(xp, clusters, u), 0, 1),  # [T, clusters, G, B, units]
             jnp.stack([w.reshape(clusters, u, c, k_slice).transpose(0, 2, 1, 3)
                        for w in matrices], 2),  # [clusters, C, m, u, K/C]
             per_step(jnp.stack(entering, 1)), per_step(jnp.stack(d_seqs, 1).astype(f32)),
             per_step(jnp.stack([rprojs[gate] for gate in gates], 1)),
             _columns(jnp.stack(d_finals).astype(f32), clusters, u),
             _vectors(vectors, extras, clusters, u),
             *_option_inputs(extras, extras.resets, clusters, u)]
  if staged:
    xs = tuple(xp[:, k].astype(f32) for k in range(g))
    inner_in = p.inner_input(small, entering, xs, rprojs).astype(w_dtype)
    inner = jnp.dot(inner_in, matrices[-1], preferred_element_type=f32)
    inputs.append(jnp.moveaxis(_columns(inner, clusters, u), 0, 1))  # [T, clusters, u, B]
  tile = lambda count: jax.ShapeDtypeStruct((clusters, count, u, b), f32)
  out_type = (jax.ShapeDtypeStruct((t, g, b, n), xp.dtype),
              *([jax.ShapeDtypeStruct((t, len(gates), b, n), w_dtype)] if separate else []),
              tile(ns), tile(max(nv, 1)), tile(c),
              *([jax.ShapeDtypeStruct((t, b, n), w_dtype)] if staged else []))
  kernel = plgpu.kernel(
      functools.partial(_backward_kernel, cfg=cfg, num_steps=t, masked=extras.lengths is not None,
                        num_states=ns, num_small=nv, separate=separate, fused=fused),
      out_type=out_type,
      scratch_types=[plgpu.SMEM((_slices(p), u, k_slice), w_dtype),
                     plgpu.SMEM((len(gates), b, k_slice), w_dtype),
                     plgpu.SMEM((TILES, u, b), f32), plgpu.SMEM((g, b, u), xp.dtype),
                     plgpu.SMEM((len(gates), b, u), w_dtype) if separate else None,
                     plgpu.SMEM((1, b, u), w_dtype) if staged else None,
                     plgpu.SMEM((max(nv + fused.count("const"), 1), u), f32),
                     plgpu.SMEM((u, b), jnp.int32) if extras.lengths is not None else None,
                     plgpu.Barrier(num_barriers=_backward_barriers(p).count),
                     plgpu.ClusterBarrier(collective_axes=("cluster",))],
      **_launch(cfg, clusters))
  d_xp, *outs = kernel(*inputs)
  d_rp = outs.pop(0) if separate else None
  d_states0, d_vectors, _, *d_inner = outs
  rows = lambda a: jnp.transpose(a, (2, 0, 1)).reshape(b, n)  # [clusters, u, B] -> [B, N]
  d_small = [d_vectors[:, k].sum(-1).reshape(1, n) for k in range(nv)]
  if staged:
    d_small.insert(p.inner, jnp.einsum("tbi,tbj->ij", inner_in, d_inner[0],
                                       preferred_element_type=f32))
  return (d_xp, None if p.same_grads else d_rp,
          tuple(rows(d_states0[:, k]) for k in range(ns)), tuple(d_small))


def _step_backward(cfg: PersistentConfig, xp, entering, d_seqs, d_finals, weights, small,
                   extras):
  """The step kernel's backward, on the arrays padded to its hidden size (zero columns stay
  zero through the cell: no input, no weight, no state, no mask, zoneout weight 0)."""
  n, wide, inner = xp.shape[-1], cfg.backward_hidden, cfg.program.inner
  last = lambda a: None if a is None else programs.pad_to(a, (*a.shape[:-1], wide))
  square = lambda w: programs.pad_to(w, (wide, wide))
  extras = extras._replace(h_mask=last(extras.h_mask),
                           keeps=None if extras.keeps is None else tuple(map(last, extras.keeps)))
  small = tuple(square(a) if k == inner else last(a) for k, a in enumerate(small))
  d_xp, d_rp, d_states0, d_small = step.scan_backward(
      cfg.backward, last(xp), tuple(map(last, entering)), tuple(map(last, d_seqs)),
      tuple(map(last, d_finals)), tuple(map(square, weights)), small, extras)
  cut = lambda a: a[..., :n]
  return (cut(d_xp), None if d_rp is None else cut(d_rp), tuple(map(cut, d_states0)),
          tuple(a[:n, :n] if k == inner else cut(a) for k, a in enumerate(d_small)))


_persistent_op = autodiff.sequence_op(_forward, _backward)


def persistent_sequence(cfg: PersistentConfig, xp, states0, weights, small, lengths,
                        resets=None, h_mask=None, keeps=None):
  """The persistent kernels as one differentiable sequence op, with the arguments and results
  of `sequence.fused_sequence`."""
  return _persistent_op(cfg, xp, tuple(states0), tuple(weights), tuple(small),
                        autodiff.Extras(lengths, resets, h_mask, keeps))
