"""From per-layer sensitivity curves to densities and a pruning schedule, pure numpy.

A sensitivity curve is what *Learning both Weights and Connections* (Han et
al., NIPS 2015, Fig. 5) plots: one layer pruned alone, by magnitude, to a
grid of densities, no retraining, accuracy measured on validation data.
``stages.sensitivity`` measures them; this module decides with them.

* ``drop_curve`` turns a curve into a conservative accuracy drop against
  density: at least the worst drop seen at that density or any denser one
  (noise on a small subset can make a sparser point look better; it never
  is), such points skipped and the curve read between the others linearly
  in log-density.
* ``choose_max_drop``: each layer's final density is the sparsest whose
  drop stays within a budget.
* ``choose_target_rate``: one drop budget shared by all layers, the smallest
  that reaches an estimated compression rate (pruning + quantization, the
  paper's P+Q column; Huffman coding then adds to it).
* ``plan_rounds``: the iterative schedule. Each layer walks from 1.0 to its
  final density in equal steps of ``drop + slope * ln(1/density)``, so its
  steps are fine where its curve is steep and geometric where it is flat;
  the fewest rounds are taken whose every round adds at most ``round_drop``
  of (summed) drop before retraining.

Accuracies and drops are fractions (0.005 = 0.5 percentage points).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.algorithms.pruning import validate_density
from caffe_dc.base import defaults, layer_policy
from caffe_dc.base.errors import InputError

DEFAULT_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04,
                0.03, 0.02, 0.01)
FLOAT_BITS = 32


def density_grid(text: Optional[str] = None) -> List[float]:
    """'1,0.5,0.1' -> [1.0, 0.5, 0.1]: distinct densities in (0, 1], densest first; 1.0 is always in."""
    if text is None:
        vals = list(DEFAULT_GRID)
    else:
        vals = []
        for part in str(text).split(","):
            if part.strip():
                try:
                    vals.append(float(part))
                except ValueError:
                    raise InputError("density grid: %r is not a number" % part.strip())
    vals = sorted({validate_density(v) for v in vals} | {1.0}, reverse=True)
    if len(vals) < 2:
        raise InputError("density grid needs at least one density below 1.0")
    return vals


class Curve(NamedTuple):
    name: str
    kind: str                 # "conv" or "fc"
    weights: int
    densities: np.ndarray     # ascending, ends at 1.0
    accuracy: np.ndarray


def curves_from_json(doc: Mapping) -> Tuple[float, List[Curve]]:
    """(baseline accuracy, curves in net order) from a sensitivity.json document."""
    try:
        base = float(doc["baseline"]["accuracy"])
        out = []
        for l in doc["layers"]:
            d = np.asarray(l["densities"], dtype=np.float64)
            a = np.asarray(l["accuracy"], dtype=np.float64)
            if d.shape != a.shape or d.ndim != 1 or d.size < 2:
                raise ValueError("layer %r: densities and accuracies differ in length or are too few" % l.get("name"))
            if not (np.isfinite(d).all() and np.isfinite(a).all() and (d > 0).all() and (d <= 1).all()):
                raise ValueError("layer %r: densities must be in (0, 1], accuracies finite" % l.get("name"))
            if l["kind"] not in layer_policy.KINDS:
                raise ValueError("layer %r: kind %r is neither conv nor fc" % (l.get("name"), l["kind"]))
            order = np.argsort(d)
            out.append(Curve(str(l["name"]), l["kind"], int(l["weights"]), d[order], a[order]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError("not a sensitivity file (%s: %s)" % (type(e).__name__, e))
    if not out:
        raise InputError("the sensitivity file has no layers")
    return base, out


def drop_curve(c: Curve, baseline: float) -> np.ndarray:
    """Monotone drop at each of ``c.densities``, >= 0, never below the worst drop seen at that density or
    any denser one.

    A point that looks better than a denser one is taken for noise: it is skipped, and the curve runs
    straight (in log-density) from the last point that matched or set the worst drop so far to the next one. Taking
    the running worst alone would leave a flat step there, and a budget equal to its height would
    send the layer to the far end of the step in one jump.
    """
    drop = np.maximum(baseline - c.accuracy, 0.0)
    n = drop.size
    keep, top = [n - 1], drop[n - 1]          # densities ascend: walk from the densest point down
    for i in range(n - 2, -1, -1):
        if drop[i] >= top:
            keep.append(i)
            top = drop[i]
    ys = [drop[i] for i in keep]
    if keep[-1] != 0:                          # past the last new worst the curve stays at it
        keep.append(0)
        ys.append(top)
    x = np.log(c.densities)
    return np.interp(x, x[keep[::-1]], np.asarray(ys[::-1]))


def drop_at(c: Curve, baseline: float, density) -> np.ndarray:
    """Drop at any density, linear in log-density between grid points; below the grid, the sparsest point's."""
    x = np.log(c.densities)
    return np.interp(np.log(np.clip(density, c.densities[0], 1.0)), x, drop_curve(c, baseline))


def density_for_drop(c: Curve, baseline: float, budget: float) -> float:
    """The sparsest density whose drop stays <= ``budget`` (never below the grid's sparsest point)."""
    drop = drop_curve(c, baseline)
    x = np.log(c.densities)
    ok = np.flatnonzero(drop <= budget + 1e-12)
    i = int(ok[0])   # drop is non-increasing with density and 0 at 1.0, so ok is a suffix
    if i == 0:
        return float(c.densities[0])
    # between grid points i-1 (drop > budget) and i (drop <= budget): where the line crosses the budget
    d0, d1 = drop[i - 1], drop[i]
    t = (d0 - budget) / (d0 - d1) if d0 > d1 else 1.0
    return float(np.exp(x[i - 1] + t * (x[i] - x[i - 1])))


def choose_max_drop(baseline: float, curves: Sequence[Curve], max_drop: float) -> Dict[str, float]:
    if not (max_drop >= 0 and math.isfinite(max_drop)):
        raise InputError("the largest allowed drop must be >= 0, got %r" % (max_drop,))
    return {c.name: density_for_drop(c, baseline, max_drop) for c in curves}


def default_bits(curves: Sequence[Curve], net: Optional[str] = None) -> Dict[str, int]:
    """Each curve's layer at ``layer_policy.default_bits`` (``net``: one of the paper's, whose tables then hold)."""
    return {c.name: layer_policy.default_bits(c.kind, net, c.name) for c in curves}


def estimated_rate(curves: Sequence[Curve], densities: Mapping[str, float], bits: Mapping[str, int],
                   index_bits: int = defaults.INDEX_BITS) -> float:
    """Estimated P+Q rate of the prunable weights: 32-bit dense against codes + relative indices + codebooks.

    A gap longer than 2**index_bits needs filler entries; with kept weights spread at random
    (gaps geometric with p = density) that adds q**s / (1 - q**s) entries per kept weight,
    q = 1 - density, s = 2**index_bits.
    """
    dense = compressed = 0.0
    s = 2 ** index_bits
    for c in curves:
        d = densities[c.name]
        b = bits[c.name]
        qs = (1.0 - d) ** s
        entries = c.weights * d * (1.0 + qs / (1.0 - qs))
        dense += FLOAT_BITS * c.weights
        compressed += entries * (b + index_bits) + FLOAT_BITS * 2 ** b
    return dense / compressed


def rate_ceiling(shapes: Mapping[str, Sequence[Sequence[int]]], layer_types: Mapping[str, str],
                 bits: Mapping[str, int]) -> float:
    """A rate no file of this net can pass, whatever is pruned: its float32 values over what stays however
    far the prunable layers go (their codebooks, or their values raw where that is smaller, as the
    encoder stores them) and every other blob raw (biases, layers that are not pruned).

    ``shapes``: {layer: [blob shapes]}; ``layer_types``: {prunable layer: Caffe type}; ``bits``: weight bits
    of the layers that have them given (the rest: their kind's default, as the chooser counts them)."""
    dense = floor = 0
    for name, blobs in shapes.items():
        sizes = [int(np.prod(b, dtype=np.int64)) for b in blobs]
        dense += FLOAT_BITS * sum(sizes)
        rest = sizes
        if name in layer_types and sizes:
            b = bits.get(name) or layer_policy.default_bits(layer_types[name])
            floor += min(FLOAT_BITS * sizes[0], FLOAT_BITS * 2 ** b)
            rest = sizes[1:]
        floor += FLOAT_BITS * sum(rest)
    return dense / floor if floor else math.inf


def check_reachable(rate: float, shapes, layer_types, bits) -> None:
    """Refuse, before any training, a target rate above ``rate_ceiling``."""
    ceiling = rate_ceiling(shapes, layer_types, bits)
    if rate > ceiling:
        raise InputError("a %gx rate is out of reach for this net: even with every weight pruned, its biases, "
                         "unpruned blobs and codebooks alone make the file %.1fx at most" % (rate, ceiling))


def choose_target_rate(baseline: float, curves: Sequence[Curve], rate: float, bits: Mapping[str, int],
                       index_bits: int = defaults.INDEX_BITS,
                       estimate: Optional[Callable[[Mapping[str, float]], float]] = None,
                       steps: int = 60) -> Dict[str, float]:
    """The smallest shared drop budget whose densities reach ``rate``.

    ``estimate(densities) -> rate`` says what a choice gives: by default the P+Q formula
    (``estimated_rate``); the pipeline passes the real encoder instead, so that the rate is the
    file's. The rate must not fall as the drop budget grows (densities only shrink), which holds
    for both; ``steps`` bisections narrow the budget (60: below one image in a million)."""
    if not (rate > 1 and math.isfinite(rate)):
        raise InputError("the target compression rate must be > 1, got %r" % (rate,))
    if estimate is None:
        def estimate(d):
            return estimated_rate(curves, d, bits, index_bits)
    sparsest = {c.name: float(c.densities[0]) for c in curves}
    best = estimate(sparsest)
    if best < rate:
        raise InputError("a %gx rate is out of reach: every layer at its grid's sparsest density gives %.1fx "
                         "(measure a sparser grid, or use fewer bits)" % (rate, best))
    lo, hi = 0.0, max(float(drop_curve(c, baseline)[0]) for c in curves)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if estimate(choose_max_drop(baseline, curves, mid)) >= rate:
            hi = mid
        else:
            lo = mid
    return meet(estimate, rate, choose_max_drop(baseline, curves, lo), choose_max_drop(baseline, curves, hi), steps)


def meet(estimate: Callable[[Mapping[str, float]], float], rate: float, denser: Mapping[str, float],
         sparser: Mapping[str, float], steps: int = 40) -> Dict[str, float]:
    """Densities between ``denser`` (short of ``rate``, or past it too, then every layer dense is used
    instead) and ``sparser`` (at or past it), blended geometrically until the rate is met, not overshot:
    a budget that moves in jumps (flat curves make every density free at once) would overshoot it."""
    if estimate(denser) >= rate:
        denser = {n: 1.0 for n in sparser}
        if estimate(denser) >= rate:
            return dict(denser)
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        t = 0.5 * (lo + hi)
        lo, hi = (lo, t) if estimate({n: denser[n] ** (1 - t) * sparser[n] ** t for n in sparser}) >= rate else (t, hi)
    return {n: float(denser[n] ** (1 - hi) * sparser[n] ** hi) for n in sparser}


class Plan(NamedTuple):
    rounds: int
    densities: Dict[str, List[float]]   # per layer, after each round
    round_drop: List[float]             # per round: summed estimated drop before retraining
    final_drop: Dict[str, float]        # per layer: estimated drop at its final density


def _path(c: Curve, baseline: float, final: float, rounds: int, slope: float) -> List[float]:
    """``rounds`` densities from 1.0 to ``final`` in equal steps of drop + slope * ln(1/d)."""
    if final >= 1.0:
        return [1.0] * rounds
    xs = np.linspace(math.log(final), 0.0, 512)            # log-density, sparse -> dense
    cost = drop_at(c, baseline, np.exp(xs)) - slope * xs   # strictly decreasing in xs
    targets = cost[-1] + (cost[0] - cost[-1]) * np.arange(1, rounds + 1) / rounds
    # np.interp needs increasing x: read the decreasing cost backwards
    d = np.exp(np.interp(targets, cost[::-1], xs[::-1]))
    d[-1] = final
    d = np.minimum.accumulate(np.minimum(d, 1.0))
    return [float(v) for v in d]


def plan_rounds(baseline: float, curves: Sequence[Curve], final: Mapping[str, float], round_drop: float = 0.01,
                min_rounds: int = defaults.MIN_ROUNDS, max_rounds: int = defaults.MAX_ROUNDS,
                slope: Optional[float] = None) -> Plan:
    """The fewest rounds (>= ``min_rounds``) whose each round adds at most ``round_drop`` of summed drop.

    ``slope`` weighs ln(1/density) against drop when spacing the steps; by default one
    round's budget per e-fold of pruning, so a flat curve is still pruned geometrically.
    If even ``max_rounds`` rounds exceed the budget, ``max_rounds`` it is (the plan says so).
    """
    if not round_drop > 0:
        raise InputError("the per-round drop must be > 0, got %r" % (round_drop,))
    if not 1 <= min_rounds <= max_rounds:
        raise InputError("need 1 <= min rounds <= max rounds, got %r, %r" % (min_rounds, max_rounds))
    slope = round_drop if slope is None else slope
    plan = None
    for r in range(min_rounds, max_rounds + 1):
        dens = {c.name: _path(c, baseline, final[c.name], r, slope) for c in curves}
        per_round = []
        for i in range(r):
            prev = {c.name: (dens[c.name][i - 1] if i else 1.0) for c in curves}
            per_round.append(float(sum(drop_at(c, baseline, dens[c.name][i]) - drop_at(c, baseline, prev[c.name])
                                       for c in curves)))
        plan = Plan(r, dens, per_round, {c.name: float(drop_at(c, baseline, final[c.name])) for c in curves})
        if max(per_round) <= round_drop + 1e-12:
            break
    return plan
