"""Peak memory and time of one forward+backward pass of an LSTM layer over long sequences, with and
without remat (the scan keeping every k-th carry and recomputing each segment in the backward).

    python -m benchmarks.memory     # writes benchmarks/results/memory.{json,md}; ~20 min, 2 cores

Every configuration runs in its own subprocess, so that its peak resident memory (VmHWM in
/proc/self/status) is its own. Each child compiles the step ahead of time and records XLA's
estimate (compiled.memory_analysis(): arguments + outputs + temporaries); a configuration whose
estimate exceeds --budget_gib is not run (on a machine without swap it would be killed, or take
the machine's other processes with it). At the shortest length, each remat child also checks
that its gradients equal the plain backward's (after its measurements, not to raise its peak).
"""
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.common import cpu_name, main_flags, write_json
from rnn_research.cells import LSTMDef, PRESETS
from rnn_research.layers import run

FLAGS = flags.FLAGS
flags.DEFINE_list("times", ["1000", "10000", "100000"], "Sequence lengths.")
flags.DEFINE_list("remats", ["none", "sqrt", "100"], "remat settings: none, sqrt or an int k.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_integer("in_features", 32, "Input size.")
flags.DEFINE_integer("hidden", 256, "Hidden size.")
flags.DEFINE_float("budget_gib", 20.0, "Configurations XLA estimates above this are not run.")
flags.DEFINE_integer("step_budget", 30000, "Timed repetitions: about this many steps in all.")
flags.DEFINE_string("child", None, "Internal: run one configuration 'time,remat', print JSON.")
flags.DEFINE_string("out", str(pathlib.Path(__file__).parent / "results" / "memory"),
                    "Output path without extension.")

GIB = 2 ** 30


def parse_remat(text: str):
  return None if text == "none" else ("sqrt" if text == "sqrt" else int(text))


def peak_rss_bytes() -> int:
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) * 1024
  raise RuntimeError("no VmHWM in /proc/self/status")


def train_step(cell, remat):
  """Gradient of a loss over the whole sequence w.r.t. every parameter."""
  def loss(params, xs):
    ys, _ = run(cell, params, xs, time_major=True, remat=remat)
    return jnp.mean(ys * ys)
  return jax.jit(jax.value_and_grad(loss))


def child(num_steps: int, remat_text: str) -> dict:
  remat = parse_remat(remat_text)
  cell = LSTMDef(FLAGS.in_features, FLAGS.hidden, PRESETS["NP"])
  params = cell.init_params(jax.random.key(0))
  xs = jax.random.normal(jax.random.key(1), (num_steps, FLAGS.batch, FLAGS.in_features))
  step = train_step(cell, remat)
  start = time.perf_counter()
  compiled = step.lower(params, xs).compile()
  compile_s = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  estimate = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
              + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
  row = dict(time=num_steps, remat=remat_text, batch=FLAGS.batch, hidden=FLAGS.hidden,
             in_features=FLAGS.in_features, compile_s=round(compile_s, 2),
             xla_estimate_mib=round(estimate / 2 ** 20, 1),
             xla_temp_mib=round(analysis.temp_size_in_bytes / 2 ** 20, 1))
  if estimate > FLAGS.budget_gib * GIB:
    return dict(row, ran=False, note=f"XLA's estimate exceeds the {FLAGS.budget_gib} GiB budget")
  grads = jax.block_until_ready(compiled(params, xs))[1]  # warm-up: allocation
  reps = max(1, min(5, FLAGS.step_budget // num_steps))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, xs))
    times.append(time.perf_counter() - start)
  ms = 1e3 * np.asarray(times)
  row.update(ran=True, peak_rss_mib=round(peak_rss_bytes() / 2 ** 20, 1), reps=reps,
             median_ms=round(float(np.median(ms)), 1), min_ms=round(float(ms.min()), 1),
             max_ms=round(float(ms.max()), 1),
             us_per_step=round(1e3 * float(np.median(ms)) / num_steps, 1))
  if remat is not None and num_steps == min(int(t) for t in FLAGS.times):  # after the peak
    plain = train_step(cell, None)(params, xs)[1]
    row["grad_rel_err_vs_no_remat"] = max(
        float(jnp.linalg.norm(grads[k] - plain[k]) / jnp.linalg.norm(plain[k])) for k in plain)
  return row


def run_child(num_steps: int, remat_text: str) -> dict:
  command = [sys.executable, "-m", "benchmarks.memory", f"--child={num_steps},{remat_text}",
             f"--times={','.join(FLAGS.times)}", f"--batch={FLAGS.batch}",
             f"--in_features={FLAGS.in_features}", f"--hidden={FLAGS.hidden}",
             f"--budget_gib={FLAGS.budget_gib}", f"--step_budget={FLAGS.step_budget}"]
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode:
    return dict(time=num_steps, remat=remat_text, ran=False,
                note=f"child exited with {result.returncode}: {result.stderr[-500:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(record: dict) -> str:
  lines = [f"One LSTM layer (NP) fwd+bwd, batch {FLAGS.batch}, input {FLAGS.in_features}, "
           f"hidden {FLAGS.hidden}, float32, {record['device']} ({record['cpu_count']} cores), "
           f"jax {record['jax']}, {record['date']}. Peak: VmHWM of the configuration's own "
           "process; estimate: XLA's memory_analysis. 1-minute load average "
           f"{record['load_average_start']:.1f} at the start, {record['load_average_end']:.1f} "
           "at the end: where it exceeds the cores, the times are noisy (the memory is not).",
           "",
           "| T | remat | peak RSS MiB | XLA estimate MiB | median s | min | max | µs/step |",
           "|---|---|---|---|---|---|---|---|"]
  for r in record["rows"]:
    if r.get("ran"):
      lines.append(f"| {r['time']} | {r['remat']} | {r['peak_rss_mib']:.0f} | "
                   f"{r['xla_estimate_mib']:.0f} | {r['median_ms'] / 1e3:.2f} | "
                   f"{r['min_ms'] / 1e3:.2f} | {r['max_ms'] / 1e3:.2f} | {r['us_per_step']} |")
    else:
      estimate = r.get("xla_estimate_mib")
      lines.append(f"| {r['time']} | {r['remat']} | not run | "
                   f"{'' if estimate is None else f'{estimate:.0f}'} | {r['note']} | | | |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if FLAGS.child:
    num_steps, remat_text = FLAGS.child.split(",")
    print(json.dumps(child(int(num_steps), remat_text)))
    return
  load_start, rows = os.getloadavg()[0], []
  for num_steps in map(int, FLAGS.times):
    for remat_text in FLAGS.remats:
      rows.append(run_child(num_steps, remat_text))
      print(json.dumps(rows[-1]), flush=True)
  record = dict(benchmark="memory", command=" ".join(["python -m benchmarks.memory",
                                                      *sys.argv[1:]]), device=cpu_name(), platform="cpu", cpu_count=os.cpu_count(),
      memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
      jax=jax.__version__, date=datetime.date.today().isoformat(),
      load_average_start=load_start, load_average_end=os.getloadavg()[0], rows=rows)
  out = pathlib.Path(FLAGS.out)
  write_json(out.with_suffix(".json"), record, main_flags())
  out.with_suffix(".md").write_text(markdown(record))
  print(markdown(record))


if __name__ == "__main__":
  app.run(main)
