"""Measuring tools: speed, memory, time-to-loss and the comparison with nanoGPT; measurements, not tests. Run
from the repo's root, each module with its commands (`python -m tools.NAME --help`):

    python -m tools.speed throughput --preset cpu       # the training step: tokens/s, memory, FLOP/s
    python -m tools.speed time-to-loss --presets classic,cpu --target 1.88
    python -m tools.speed levers                        # the classic step, one change at a time
    python -m tools.generation sample                   # characters/s, with and without the KV cache
    python -m tools.generation decode-step              # one generated character: crop, rolling cache, compiled
    python -m tools.peer --nanogpt PATH                 # babygpt against nanoGPT itself, in turns
    python -m tools.whole_val out                       # best checkpoints on the whole val split
    python -m tools.make_figures                        # the walkthrough's figures

tools/common.py holds what they share: the flag checks (one line for a bad value), peak memory, JSON output.
"""
