"""Task models around a sequence backbone: next-step prediction, many-to-one classification,
per-step tagging, seq2seq with attention and conditional generation."""
from rnn_research.models.backbones import BACKBONES, make_backbone
from rnn_research.models.classifier import SequenceClassifier
from rnn_research.models.conditional import ConditionalGenerator
from rnn_research.models.next_step import NextStepModel
from rnn_research.models.seq2seq import Seq2Seq
from rnn_research.models.tagger import SequenceTagger
