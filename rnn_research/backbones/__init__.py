"""Sequence backbones by name (`config.model.backbone`), so every task head takes every one.

A backbone is an nnx.Module with `output_size`, called
    backbone(xs [B, T, D], *, lengths=None, initial_carry=None) -> (ys [B, T, output_size], carry)
Its builder reads the model config: the keys of COMMON_KEYS and its own (`BACKBONES[name].keys`),
each declared here once with its default; `complete` fills in what a config leaves out. The
recurrent stacks also take any of RECURRENT_OPTIONS the config sets (recurrent dropout, zoneout,
remat, heads, ...; see `rnn_research.layers.StackedRNN`).
"""
import dataclasses
from typing import Callable

import ml_collections
from flax import nnx

from rnn_research.backbones import convolutional, transformer
from rnn_research.layers import GRU, LSTM, SimpleRNN

# The model config keys every backbone reads, with their defaults.
COMMON_KEYS = dict(hidden_size=100, num_layers=1, dropout=0.0)

# The backbones that are recurrent stacks (rnn_research.layers.StackedRNN).
RECURRENT = ("lstm", "gru", "rnn")

# Layer options of the recurrent stacks a model config may set (absent: the layer's default).
RECURRENT_OPTIONS = ("input_dropout", "recurrent_dropout", "weight_dropout", "zoneout_c",
                     "zoneout_h", "remat", "grad_clip", "num_heads")


def _recurrent_options(config, rngs, *cell_options):
  options = {k: config[k] for k in (*RECURRENT_OPTIONS, *cell_options) if k in config}
  return dict(num_layers=config.num_layers, backend=config.backend, dropout=config.dropout,
              rngs=rngs, **options)


def lstm(config, in_features: int, rngs: nnx.Rngs):
  return LSTM(in_features, config.hidden_size, variant=config.variant,
              **_recurrent_options(config, rngs, "cell_clip"))


def gru(config, in_features: int, rngs: nnx.Rngs):
  return GRU(in_features, config.hidden_size, **_recurrent_options(config, rngs, "layer_norm"))


def rnn(config, in_features: int, rngs: nnx.Rngs):
  return SimpleRNN(in_features, config.hidden_size, **_recurrent_options(config, rngs))


@dataclasses.dataclass(frozen=True)
class Backbone:
  """build: (model config, in_features, rngs) -> nnx.Module; keys: the model config keys it
  reads besides COMMON_KEYS, with their defaults."""
  build: Callable
  keys: dict


BACKBONES = {
    "lstm": Backbone(lstm, dict(variant="V", backend="scan")),
    "gru": Backbone(gru, dict(backend="scan")),
    "rnn": Backbone(rnn, dict(backend="scan")),
    "transformer": Backbone(transformer.transformer_backbone, transformer.CONFIG_KEYS),
    "tcn": Backbone(convolutional.tcn_backbone, convolutional.TCN_KEYS),
    "mlp": Backbone(convolutional.mlp_backbone, convolutional.MLP_KEYS),
}


def complete(config, head_keys: dict | None = None) -> ml_collections.ConfigDict:
  """A copy of the model config (a ConfigDict or dict) with every key its backbone reads (and
  `head_keys`, a task head's), the declared defaults filling what it leaves out."""
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  if given.get("backbone") not in BACKBONES:
    raise ValueError(f"model.backbone must be one of {sorted(BACKBONES)}, "
                     f"got {given.get('backbone')!r}")
  return ml_collections.ConfigDict({**COMMON_KEYS, **BACKBONES[given["backbone"]].keys,
                                    **(head_keys or {}), **given})


def make_backbone(config, in_features: int, rngs: nnx.Rngs):
  """The backbone named by config.backbone, reading `in_features`-wide inputs."""
  config = complete(config)
  return BACKBONES[config.backbone].build(config, in_features, rngs)
