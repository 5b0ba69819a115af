"""A model's parameters as plain numpy: what a caffemodel holds, free of Caffe.

The codec, the algorithms and the Caffe glue all pass models around in this
form; ``pycaffe.caffemodel`` reads and writes it.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple

import numpy as np


class LayerParams(NamedTuple):
    type: str
    blobs: List[np.ndarray]


Params = Dict[str, LayerParams]  # ordered as in the caffemodel
