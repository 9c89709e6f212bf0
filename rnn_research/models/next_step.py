"""Next-step prediction: a backbone reads x(1..t) and a linear head predicts step t+1.

Inputs [B, T, D] (piano rolls) or token ids [B, T] (characters, embedded first); output logits
[B, T, K]: 88 independent sigmoid units for piano rolls, a softmax over the vocabulary for text.
"""
from flax import nnx

from rnn_research.backbones import make_backbone
from rnn_research.layers.regularization import check_rate


class NextStepModel(nnx.Module):
  """Backbone + linear read-out at every step.

  Args:
    config: model config (backbone, hidden_size, num_layers, ...; see `make_backbone`).
    in_features: D of float inputs, or the vocabulary size for token ids (`embed=True`).
    out_features: K, units of the output layer.
    embed: inputs are token ids, embedded to hidden_size first.
    output_dropout: dropout rate on the backbone's outputs before the read-out, in [0, 1) (the
      only dropout a one-layer recurrent backbone has: its `dropout` is between layers).
  """

  def __init__(self, config, in_features: int, out_features: int, *, embed: bool = False,
               output_dropout: float = 0.0, rngs: nnx.Rngs):
    self.embed = nnx.Embed(in_features, config.hidden_size, rngs=rngs) if embed else None
    width = config.hidden_size if embed else in_features
    self.backbone = make_backbone(config, width, rngs)
    check_rate("output_dropout", output_dropout)
    self.dropout = nnx.Dropout(output_dropout, rngs=rngs) if output_dropout > 0 else None
    self.head = nnx.Linear(self.backbone.output_size, out_features, rngs=rngs)

  def __call__(self, inputs, lengths):
    xs = self.embed(inputs) if self.embed is not None else inputs
    ys, _ = self.backbone(xs, lengths=lengths)
    if self.dropout is not None:
      ys = self.dropout(ys)
    return self.head(ys)
