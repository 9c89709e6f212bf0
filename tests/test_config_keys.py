"""Each task, task head and backbone declares the config keys it reads, with their defaults, in
one place: a trial config gets them filled in (`train.default_config`, `tasks.complete`), what a
config sets is kept, a task option no task declares is refused naming the task's options, and
the heads and backbones build from a model config that leaves their keys out."""
import ml_collections
import pytest
from flax import nnx

from rnn_research import backbones, tasks, train
from rnn_research.models.labelling import SequenceClassifier
from rnn_research.models.seq2seq import Seq2Seq


@pytest.mark.parametrize("task", sorted(tasks.MODULES))
def test_default_config_holds_what_the_task_and_backbone_declare(task):
  config = train.default_config(task, "gru")
  declared = tasks.registered(task)
  assert config.task_options.to_dict() == declared.options
  expected = {**backbones.COMMON_KEYS, **backbones.BACKBONES["gru"].keys, **declared.model}
  assert {k: config.model[k] for k in expected} == expected


def test_completion_keeps_what_a_config_sets():
  config = ml_collections.ConfigDict(dict(task="classify", task_options=dict(label="meter"),
                                          model=dict(backbone="transformer", num_heads=2)))
  completed = tasks.complete(config)
  assert completed.task_options.label == "meter" and completed.task_options.max_length == 256
  assert completed.model.num_heads == 2 and completed.model.positions == "sinusoidal"
  assert completed.model.pooling == "last"
  assert "max_length" not in config.task_options  # the config itself is left as it was


def test_a_misspelt_task_option_is_refused_naming_the_options():
  config = train.default_config("classify")
  config.task_options.max_lenght = 64
  with pytest.raises(ValueError, match=r"\['max_lenght'\] are not options of task 'classify'.*"
                                       r"max_length"):
    tasks.complete(config)


def test_an_unknown_backbone_is_named():
  with pytest.raises(ValueError, match="model.backbone must be one of .*got 'lstn'"):
    backbones.complete({"backbone": "lstn"})


def test_heads_and_backbones_build_from_a_config_without_their_keys():
  model = SequenceClassifier(ml_collections.ConfigDict(dict(backbone="gru", hidden_size=8)), 10,
                             3, embed=True, rngs=nnx.Rngs(0))
  assert model.encoder.pooling == "last" and model.encoder.output_size == 8
  transformer = backbones.make_backbone({"backbone": "transformer", "hidden_size": 8}, 4,
                                        nnx.Rngs(0))
  assert transformer.output_size == 8
  seq2seq = Seq2Seq(ml_collections.ConfigDict(dict(backbone="lstm", hidden_size=8)), 10, 10,
                    rngs=nnx.Rngs(0))
  assert seq2seq.decoder.kind == "bahdanau"
