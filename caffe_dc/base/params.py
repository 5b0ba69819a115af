"""A model's parameters as plain numpy: what a caffemodel holds, free of Caffe.

The codec, the algorithms and the Caffe glue all pass models around in this
form; ``pycaffe.caffemodel`` reads and writes it.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
ALL = "*"   # a per-layer map's key for every layer without a value of its own


class LayerParams(NamedTuple):
    type: str
    blobs: List[np.ndarray]


Params = Dict[str, LayerParams]  # ordered as in the caffemodel


def expand(d: Optional[Dict[str, T]], layers: Sequence[str]) -> Optional[Dict[str, T]]:
    """A per-layer map with its ``*`` entry spelled out for every layer (named entries win)."""
    if d is None or ALL not in d:
        return d
    out = {n: d[ALL] for n in layers}
    out.update({k: v for k, v in d.items() if k != ALL})
    return out
