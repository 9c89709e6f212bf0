"""Running cells over time: pure functions (`run`, `run_bidirectional`, `recurrence`) and NNX
layers (`StackedRNN`, `LSTM`, `GRU`, `SimpleRNN`)."""
from rnn_research.layers.modules import (GRU, LSTM, SimpleRNN, StackedRNN,
                                        load_torch_state_dict)
from rnn_research.layers.sequence import (BACKENDS, recurrence, reverse_sequences, run,
                                         run_bidirectional)
