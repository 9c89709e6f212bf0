"""Test set-up: float64 on (tests choose each array's dtype explicitly), a seeded generator."""
import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
  return np.random.default_rng(20171001)
