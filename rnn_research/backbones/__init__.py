"""Sequence backbones by name (`config.model.backbone`), so every task head takes every one.

A backbone is an nnx.Module with `output_size`, called
    backbone(xs [B, T, D], *, lengths=None, initial_carry=None) -> (ys [B, T, output_size], carry)
Its builder reads the model config: hidden_size, num_layers, backend, dropout, and its own keys
(`variant` for "lstm"; others with `config.get(key, default)`). The recurrent stacks also take
any of RECURRENT_OPTIONS the config sets (recurrent dropout, zoneout, remat, heads, ...; see
`rnn_research.layers.StackedRNN`).
"""
from flax import nnx

from rnn_research.backbones.convolutional import mlp_backbone, tcn_backbone
from rnn_research.backbones.transformer import transformer_backbone
from rnn_research.layers import GRU, LSTM, SimpleRNN


# Layer options of the recurrent stacks a model config may set (absent: the layer's default).
RECURRENT_OPTIONS = ("input_dropout", "recurrent_dropout", "weight_dropout", "zoneout_c",
                     "zoneout_h", "remat", "grad_clip", "num_heads")


def _recurrent_options(config, rngs, *cell_options):
  options = {k: config[k] for k in (*RECURRENT_OPTIONS, *cell_options) if k in config}
  return dict(num_layers=config.num_layers, backend=config.get("backend", "scan"),
              dropout=config.get("dropout", 0.0), rngs=rngs, **options)


def lstm(config, in_features: int, rngs: nnx.Rngs):
  return LSTM(in_features, config.hidden_size, variant=config.get("variant", "V"),
              **_recurrent_options(config, rngs, "cell_clip"))


def gru(config, in_features: int, rngs: nnx.Rngs):
  return GRU(in_features, config.hidden_size, **_recurrent_options(config, rngs, "layer_norm"))


def rnn(config, in_features: int, rngs: nnx.Rngs):
  return SimpleRNN(in_features, config.hidden_size, **_recurrent_options(config, rngs))


BACKBONES = {
    "lstm": lstm,
    "gru": gru,
    "rnn": rnn,
    "transformer": transformer_backbone,
    "tcn": tcn_backbone,
    "mlp": mlp_backbone,
}


def make_backbone(config, in_features: int, rngs: nnx.Rngs):
  """The backbone named by config.backbone, reading `in_features`-wide inputs."""
  if config.backbone not in BACKBONES:
    raise ValueError(f"model.backbone must be one of {sorted(BACKBONES)}, "
                     f"got {config.backbone!r}")
  return BACKBONES[config.backbone](config, in_features, rngs)
