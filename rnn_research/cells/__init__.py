"""Recurrent cells: frozen definitions with pure step functions (`*Def`) and NNX modules."""
from rnn_research.cells.base import CellDef
from rnn_research.cells.elman import ElmanDef
from rnn_research.cells.gru import GRUDef
from rnn_research.cells.lstm import (DEFAULT_VARIANT, LAYER_NORM_PRESETS, PRESETS, LSTMCarry,
                                     LSTMDef, LSTMSpec, lstm_def, lstm_spec, lstm_variant)
from rnn_research.cells.mgu import MGUDef
from rnn_research.cells.modules import (CellModule, ElmanCell, GRUCell, LSTMCell, MGUCell,
                                        MUTCell)
from rnn_research.cells.mut import MUTDef
