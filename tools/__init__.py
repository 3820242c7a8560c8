"""Measuring tools: speed, memory, time-to-loss and the comparison with nanoGPT. Run from the repo's root:

    python -m tools.bench throughput --preset cpu
    python -m tools.make_figures
"""
