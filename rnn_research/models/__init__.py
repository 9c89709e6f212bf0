"""Task models around a sequence backbone: next-step prediction, many-to-one classification,
per-step tagging, seq2seq with attention and conditional generation."""
from rnn_research.models.conditional import ConditionalGenerator
from rnn_research.models.labelling import SequenceClassifier, SequenceTagger
from rnn_research.models.next_step import NextStepModel
from rnn_research.models.seq2seq import Seq2Seq
