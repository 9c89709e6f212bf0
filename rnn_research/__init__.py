"""rnn_research: recurrent networks in JAX/Flax for ablation studies.

    import rnn_research as rr
    model = rr.LSTM(88, 128, num_layers=2, variant="V", rngs=nnx.Rngs(0))
    print(rr.summary(model, xs))      # parameters by submodule, output shapes

The names below are imported on first use, so that `import rnn_research.<module>` stays as light
as that module.
"""
import importlib
import importlib.metadata

__version__ = importlib.metadata.version("rnn_research")

# name -> the module that defines it
_EXPORTS = {
    **{name: "rnn_research.layers" for name in (
        "LSTM", "GRU", "SimpleRNN", "StackedRNN", "load_torch_state_dict", "run",
        "run_bidirectional", "recurrence")},
    **{name: "rnn_research.cells" for name in (
        "LSTMCell", "GRUCell", "ElmanCell", "MGUCell", "MUTCell", "CellModule", "LSTMDef",
        "GRUDef", "ElmanDef", "MGUDef", "MUTDef", "LSTMSpec", "PRESETS")},
    "summary": "rnn_research.summaries",
}
__all__ = ["__version__", *_EXPORTS]


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'rnn_research' has no attribute {name!r}")
  return getattr(importlib.import_module(_EXPORTS[name]), name)
