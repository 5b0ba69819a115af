"""Sharing a target rate out among a net's layers: final densities from sensitivity curves.

The curves (``algorithms.sensitivity``) say how much validation accuracy
each layer loses when pruned alone; an ``Allocation`` turns them and a
target rate into one final density per layer.
"""
from __future__ import annotations

import enum
import math
from typing import Callable, Dict, Mapping, Optional

import numpy as np

from caffe_dc.algorithms import sensitivity as sens
from caffe_dc.base.errors import InputError

HULL_POINTS = 256   # densities per layer, log-spaced from the sparsest grid point to 1.0


class Allocation(enum.Enum):
    """How a target rate is shared out among the layers.

    SHARED_DROP
        Every layer pruned as far as one shared drop allows, the drop each would cost pruned alone
        (``sensitivity.choose_target_rate``). Simple, but blind to size: a layer of a thousand weights
        is pruned as hard as one of a quarter million, though its bits hardly count.
    LEAST_DROP
        The least summed drop for the size: one price per bit for all layers, each layer at the point
        of its curve's lower convex hull (in bits against drop) that minimises drop + price x bits,
        the price bisected until the rate is met, then the last layer to move placed along its hull
        segment so that the rate is met, not overshot (``least_drop``). The hull, not the raw curve,
        because curves measured without retraining fall off cliffs and then flatten, and the raw
        curve would send a layer to the bottom of a cliff in one jump.
    """
    SHARED_DROP = "shared_drop"
    LEAST_DROP = "least_drop"


def _hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of the points (x ascending), left to right."""
    keep: list = []
    for i in range(x.size):
        while len(keep) >= 2:
            a, b = keep[-2], keep[-1]
            if (y[b] - y[a]) * (x[i] - x[a]) >= (y[i] - y[a]) * (x[b] - x[a]):
                keep.pop()
            else:
                break
        keep.append(i)
    return np.asarray(keep)


def least_drop(baseline: float, curves, rate: float, bits: Mapping[str, int], index_bits: int,
               estimate: Callable[[Mapping[str, float]], float], steps: int = 40) -> Dict[str, float]:
    """``Allocation.LEAST_DROP``'s final densities reaching ``rate`` as ``estimate`` measures it."""
    hulls = {}
    for c in curves:
        d = np.exp(np.linspace(math.log(float(c.densities[0])), 0.0, HULL_POINTS))
        size = c.weights * d * (bits[c.name] + index_bits)
        drop = sens.drop_at(c, baseline, d)
        h = _hull(size, drop)
        hulls[c.name] = (d[h], size[h], drop[h])

    def at(log_price: float) -> Dict[str, float]:
        price = math.exp(log_price)
        return {n: float(d[int(np.argmin(y + price * s))]) for n, (d, s, y) in hulls.items()}

    sparsest = {n: float(h[0][0]) for n, h in hulls.items()}
    if estimate(sparsest) < rate:
        raise InputError("a %gx rate is out of reach: every layer at its grid's sparsest density gives %.1fx "
                         "(measure a sparser grid, or use fewer bits)" % (rate, estimate(sparsest)))
    lo, hi = math.log(1e-15), math.log(1e3)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if estimate(at(mid)) >= rate else (mid, hi)
    # between the two prices only the layers at a hull vertex change: slide them along their segments
    return sens.meet(estimate, rate, at(lo), at(hi), steps)


def allocate(how: Allocation, baseline: float, curves, rate: float, bits: Mapping[str, int], index_bits: int,
             estimate: Optional[Callable[[Mapping[str, float]], float]] = None) -> Dict[str, float]:
    """Final densities reaching ``rate`` the way ``how`` shares it out. ``estimate``: the rate a choice
    of densities gives (default: the P+Q formula); one given is taken to be costly (it encodes the
    candidate), so the bisections take fewer steps."""
    if how is Allocation.LEAST_DROP:
        return least_drop(baseline, curves, rate, bits, index_bits,
                          estimate or (lambda d: sens.estimated_rate(curves, d, bits, index_bits)),
                          steps=40 if estimate is None else 24)
    return sens.choose_target_rate(baseline, curves, rate, bits, index_bits,
                                   estimate=estimate, steps=60 if estimate is None else 24)
