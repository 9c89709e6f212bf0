"""Task models around a sequence backbone."""
from rnn_research.models.next_step import NextStepModel, make_backbone
