"""JSON run records: strict JSON (no NaN), whatever numpy types the results hold."""
from __future__ import annotations

import json
import math

import numpy as np


def json_safe(o):
    """JSON-safe copy: numpy scalars to Python, tuples to lists, NaN/inf to None."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    return o


def dumps(doc) -> bytes:
    return json.dumps(json_safe(doc), indent=2, allow_nan=False).encode()
