"""rnn_research: recurrent networks in JAX/Flax for ablation studies and kernel research."""
from setuptools import find_packages, setup

DATA = [
    "tensorflow-datasets>=4.9.10",  # used without TensorFlow: array_record + as_data_source()
    "array_record>=0.8.6",
    "grain>=0.2.18",
    "music21>=10.5",  # its corpus holds the built-in JSB Chorales and folk tunes
    "scipy",  # reads the standard .mat piano rolls
]

STUDY = [
    "optuna>=5",  # the sweep's studies
    "scikit-learn",  # Optuna's fANOVA importance
    "matplotlib",  # the report's figures
    "scipy",  # Welch's t-test
    "tqdm",  # progress bars
]

CLUSTER = [
    "submitit>=1.5",  # SLURM job arrays (launch/slurm.py)
    "psycopg[binary]>=3.1",  # a PostgreSQL study database (SQLAlchemy 2 reaches it through psycopg 3)
]

setup(
    name="rnn_research",
    version="0.1.0",
    description="Recurrent cells, sequence layers, Pallas kernels and LSTM ablation studies in JAX/Flax.",
    python_requires=">=3.12",
    packages=find_packages(include=["rnn_research*", "kernels*", "experiments*", "launch*"]),
    install_requires=[
        "jax>=0.11.2,<0.13",  # Mosaic GPU (kernels/persistent.py) is unstable: tested on 0.12.0.1
        "flax",
        "optax",
        "orbax-checkpoint",
        "absl-py",
        "ml_collections",
        "numpy",
    ],
    extras_require={
        # Datasets (rnn_research.data): imported lazily, so the kernels never need them.
        "data": DATA,
        # Sweeps, training loop extras and reports (launch/, rnn_research/analysis).
        "study": STUDY,
        # SLURM sweeps against a shared database (launch/slurm.py).
        "cluster": CLUSTER,
        "test": ["pytest", "pytest-xdist", *DATA, *STUDY, *CLUSTER],
        "gpu": ["jax[cuda13]>=0.11.2"],
        "tpu": ["jax[tpu]>=0.11.2"],
    },
)
