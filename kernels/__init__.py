"""Pallas kernels for the library's recurrences (GPU through Triton and Mosaic GPU, TPU through
Mosaic, any CPU in interpret mode).

    rnn.recurrence(cell, params, xp, carry0, lengths, options)
                                                        the entry point (rnn_research.layers'
                                                        recurrence with backend="pallas")
    rnn.supports(cell, platform)                        what backend="auto" may run here
    sequence.fused_sequence                             whole-sequence kernel op (custom VJP)
    step.fused_step, step.stepped_sequence              step kernel op, and it in a scan
    persistent.persistent_sequence                      persistent kernels op (Hopper; R split
                                                        over thread blocks)
    programs.program_for(cell)                          a cell in the kernels' layout

Imports nothing from rnn_research: a cell is passed in and used through its per-gate-block
interface (rnn_research.cells.base), so the dependency runs one way.
"""
