"""The pruning rules a run may name (``pruning.PruningRule``): one entry per rule.

A new rule is a module with a ``PruningRule`` subclass and one entry here.
"""
from __future__ import annotations

from typing import Dict

from caffe_dc.algorithms.pruning import MAGNITUDE, PruningRule
from caffe_dc.base.errors import InputError

RULES: Dict[str, PruningRule] = {MAGNITUDE.name: MAGNITUDE}
DEFAULT = MAGNITUDE.name


def rule(name: str) -> PruningRule:
    """The registered rule of this name; a one-line ``InputError`` naming the known ones otherwise."""
    if name not in RULES:
        raise InputError("no pruning rule %r (known: %s)" % (name, ", ".join(sorted(RULES))))
    return RULES[name]
