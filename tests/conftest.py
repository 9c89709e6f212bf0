"""Test set-up: float64 on (tests choose each array's dtype explicitly), a seeded generator,
one persistent compilation cache for every process of a run (pytest's workers and the trials and
sweeps that tests start), since the many small trainings compile the same programs again, and
enough of XLA's CPU threads for Pallas's GPU interpreter (see PJRT_NPROC below)."""
import os
import pickle
import tempfile

_CACHE = {"JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), "rnn_research_jax"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
for _name, _value in _CACHE.items():
  os.environ.setdefault(_name, _value)  # read by jax at import, here and in subprocesses
# Pallas's GPU interpreter runs each CTA of a cluster as an XLA computation whose host callbacks
# block at the cluster barrier until the others arrive; with XLA's CPU thread pool at its default
# size, the core count, a 2-core machine deadlocks once the kernel's own callback and one CTA hold
# both threads (seen in CI; reproduced with 2 CTAs under load, gone with 8 threads).
os.environ.setdefault("PJRT_NPROC", "8")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
  return np.random.default_rng(20171001)


def write_fake_chorales(path, seed=0, counts=(16, 6, 6)):
  """A tiny Boulanger-Lewandowski pickle whose sequences cycle through three chords from a
  random phase, so a recurrent model can beat the per-key frequency baseline in a few epochs."""
  chords = [(60, 64, 67), (62, 65, 69), (59, 62, 67, 71)]
  rng = np.random.default_rng(seed)
  splits = {}
  for split, count in zip(("train", "valid", "test"), counts):
    splits[split] = [[chords[(phase + t) % 3] for t in range(length)]
                     for phase, length in zip(rng.integers(0, 3, count), rng.integers(12, 40, count))]
  with open(path, "wb") as f:
    pickle.dump(splits, f)
  return path


@pytest.fixture(scope="session")
def fake_chorales(tmp_path_factory):
  """(pickle path, TFDS data dir) shared by the tests that train on piano rolls."""
  root = tmp_path_factory.mktemp("fake_chorales")
  return str(write_fake_chorales(root / "chorales.pickle")), str(root / "tfds")
