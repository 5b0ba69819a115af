"""Defaults that several layers fall back on, each declared once (the CLI's help shows these values).

A schedule file or a command-line option overrides each; these are what
holds when nothing does.
"""
from __future__ import annotations

LR_FACTOR = 0.1    # retraining base_lr = factor x the solver's: the paper's 1/10 for the LeNets
INDEX_BITS = 5     # relative-index bits of the chooser's P+Q rate estimate (the paper's LeNet width)
MIN_ROUNDS = 2     # the chooser's fewest prune -> retrain rounds ...
MAX_ROUNDS = 10    # ... and most
