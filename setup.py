"""rnn_research: recurrent networks in JAX/Flax for ablation studies and kernel research."""
from setuptools import find_packages, setup

setup(
    name="rnn_research",
    version="0.1.0",
    description="Recurrent cells, sequence layers, Pallas kernels and LSTM ablation studies in JAX/Flax.",
    python_requires=">=3.12",
    packages=find_packages(include=["rnn_research*", "kernels*", "experiments*", "launch*"]),
    install_requires=[
        "jax>=0.11.2",
        "flax",
        "optax",
        "orbax-checkpoint",
        "absl-py",
        "ml_collections",
        "numpy",
    ],
    extras_require={
        "test": ["pytest", "scipy"],
        "gpu": ["jax[cuda13]>=0.11.2"],
        "tpu": ["jax[tpu]>=0.11.2"],
    },
)
