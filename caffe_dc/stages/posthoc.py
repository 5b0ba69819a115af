"""Post-hoc compression with calibration images: densities and bits chosen by measurement, layers refitted.

``encode --calib DATA`` (docs/post-hoc.md):

1. The calibration images are split, seeded: the *pool*, on which every layer
   is refitted and every choice scored (``Session``: out of fold, each image by
   refits on the other folds; the file is then refitted on the whole pool),
   and the *held-out* part, read once at the end for the reported drop, its
   interval and verdict.
2. Sensitivity (``Session.curves``): each compressible layer alone is pruned to
   each density of a grid (from the densest down, until it is past any
   budget) at each bit width, refitted to the dense layer's outputs
   (``algorithms.reconstruction``), k-means quantized and bias-corrected; its
   KL divergence from the dense net, on the pool (some of its folds on a deep
   net), gives a curve per layer and width. The images are stepped
   through the net (``pycaffe.calibration``: ``advance``, ``finish``), so each
   point runs the net from that layer on only.
3. ``Menu`` merges each layer's widths into one curve over its record's size
   (the real encoder's, ``SizeTable``), and the chooser's ``least_drop``
   allocation shares a candidate rate out among the layers. The whole net is
   then compressed layer by layer in net order, each refit seeing the already
   compressed layers before it (``Session.compress``), and scored in top-1.
4. ``--max-drop`` / ``--max-disagreement`` (``choose_rate``): the largest
   candidate rate whose drop *bound* (Tango's interval, ``stats.paired``), read
   through a monotone fit over the rates tried, stays within the budget.
   ``--target-rate``: the allocation for that rate. ``--density``: as given.
"""
from __future__ import annotations

import math
import os
import time
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from caffe_dc.algorithms import pruning, quantization
from caffe_dc.algorithms.allocation import least_drop
from caffe_dc.algorithms import reconstruction as rc
from caffe_dc.algorithms import sensitivity as sens
from caffe_dc.algorithms import stats
from caffe_dc.base import layer_policy
from caffe_dc.base.errors import InputError
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.codec import frontend
from caffe_dc.pycaffe.layerwise import Images, Layer, in_order, layers_of, moments  # noqa: F401 (Layer, layers_of: posthoc's API)

GRID = (1.0, 0.35, 0.22, 0.15, 0.1, 0.07, 0.05, 0.035, 0.025)
HOLDOUT = 0.3              # share of the calibration images held out for the report
CHOICE_ALPHA = 0.5         # the choice reads the bound of a 50% interval: one-sided 75%
REPORT_ALPHA = stats.ALPHA
MEASURES = {False: "top-1 accuracy", True: "top-1 agreement with the uncompressed model"}   # by agreement
CANDIDATES = 8             # candidate rates of the --max-drop search, before refining
FOLDS = 5                  # cross-fitting folds of the images not held out (Session; 1: scored in sample) ...
CROSSFIT_WORK = 20         # ... when layers x FOLDS is at most this (each candidate is compressed once a fold), else 1
REFINE = 3                 # rates bisected between the best in budget and the next above (not more: search)
SENSITIVITY_WORK = 6000    # layers x images the curves are measured on: every choosing image unless the net is deep
SENSITIVITY_MIN = 100      # (Session.sensing: each curve point runs the rest of the net, so the cost grows as layers^2)
STOP_KL = 1.0              # nats: a layer alone this far from the dense net is past any budget (Session.curves)
STOP_BUDGETS = 4           # ... as is one whose top-1 class changes on this many budgets' worth of images


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of class probabilities: the scores themselves if they are (a Softmax output), else their softmax."""
    s = np.asarray(scores, np.float64).reshape(scores.shape[0], -1)
    if s.min() >= 0 and np.allclose(s.sum(axis=1), 1.0, atol=1e-4):
        return s
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def top1_correct(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image, Caffe's Accuracy rule: no class scores strictly above the label's."""
    s = scores.reshape(scores.shape[0], -1)
    if labels.min() < 0 or labels.max() >= s.shape[1]:
        raise InputError("calibration labels run outside the net's %d classes (%d..%d)"
                         % (s.shape[1], labels.min(), labels.max()))
    return (s > s[np.arange(s.shape[0]), labels][:, None]).sum(axis=1) == 0


class Session:
    """One net and its calibration images: the dense reference, refits, compressions and their scores.

    The images not held out for the report (``pool``) come in ``folds`` folds, and every score
    that chooses is out of fold: an image is scored by refits fitted on the other folds only
    (``cross_fit`` for a candidate, ``curves`` for each layer's points), then the file is refitted
    on the whole pool (``compress`` with ``leave=None``). Scored on the images it reproduces, a
    refit looks better than it is (LeNet-300-100, calibration seed 2: 1 image lost of 700 in
    sample at 62x, 0.56 pp on the test set), and the search goes too far. A refit on (K-1)/K of
    the pool is a little worse than the file's on all of it, so few folds read pessimistic (2
    folds: a fit on half). With one fold (``fold_count``: a deep net) the refits are scored on their
    own images (in sample); docs/post-hoc.md has both measured. ``held`` is read once, for the report."""

    def __init__(self, fwd, params: Params, layers: Sequence[Layer], images: np.ndarray,
                 labels: Optional[np.ndarray], pool: np.ndarray, held: np.ndarray, ridge: float = rc.RIDGE,
                 folds: int = FOLDS, seed: int = 0):
        self.fwd, self.dense, self.layers, self.x = fwd, params, list(layers), images
        self.net = Images(fwd, images)
        self.pool, self.held, self.ridge = np.sort(pool), held, ridge
        perm = np.random.RandomState([seed, 1]).permutation(self.pool)
        self.folds = [np.sort(f) for f in np.array_split(perm, folds)]
        self.scoring = "in sample" if folds == 1 else "out of fold (%d folds)" % folds
        # the curves' images: the whole pool, or on a deep net (SENSITIVITY_WORK) a share of it: the fewest
        # whole folds that hold that many (each fold's images are scored by one refit, so whole folds keep
        # the batches full), in sample a seeded sample
        k = max(SENSITIVITY_MIN, SENSITIVITY_WORK // len(self.layers))
        if folds > 1:
            used = self.folds[:int(np.searchsorted(np.cumsum([len(f) for f in self.folds]), k)) + 1]
            self.sensing_groups = list(enumerate(used))
        else:
            self.sensing_groups = [(0, self.pool if k >= len(self.pool) else
                                    np.sort(np.random.RandomState([seed, 2]).permutation(self.pool)[:k]))]
        self.sensing = np.sort(np.concatenate([g for _, g in self.sensing_groups]))
        dense_scores = self.scores(np.arange(images.shape[0]))
        self.dense_p = probabilities(dense_scores[self.sensing])
        self.dense_top1 = dense_scores.argmax(axis=1)
        self.labels = labels if labels is not None else self.dense_top1
        self.agreement = labels is None
        self.dense_correct = top1_correct(dense_scores, self.labels)
        self.dense_inputs = self.net.cached_inputs(self.pool, [l.name for l in self.layers])
        self._moments: Dict[tuple, rc.Moments] = {}

    def _fitting(self, leave: Optional[int]) -> List[int]:
        """The folds a refit is fitted on: all but fold ``leave`` (None: all); with one fold, that one (in sample)."""
        return [j for j in range(len(self.folds)) if j != leave] or [0]

    def _others(self, leave: Optional[int]) -> np.ndarray:
        return np.sort(np.concatenate([self.folds[j] for j in self._fitting(leave)]))

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.pool, idx)

    def dense_moments(self, layer: Layer, leaves: Sequence[Optional[int]]) -> List[rc.Moments]:
        """For each fold of ``leaves``, the layer's moments on the dense net's inputs of all folds but it
        (None: all folds): summed from each fold's own, so the pool is read once. Kept for the first
        layer only, the one every compression starts from (a deep net's Gram matrices are large)."""
        keep = layer.name == self.layers[0].name
        out = {v: self._moments[(layer.name, v)] for v in leaves if (layer.name, v) in self._moments}
        if len(out) < len(set(leaves)):
            parts = [moments(layer.geometry, self.dense_inputs[layer.name][self._rows(f)]) for f in self.folds]
            for v in set(leaves) - set(out):
                out[v] = rc.Moments.total([parts[j] for j in self._fitting(v)])
                if keep:
                    self._moments[(layer.name, v)] = out[v]
        return [out[v] for v in leaves]

    def scores(self, idx: np.ndarray) -> np.ndarray:
        return self.net.scores(idx)

    def divergence(self, scores: np.ndarray) -> float:
        """Mean KL divergence of class probabilities ``scores`` (of the images ``sensing``) from the dense net's."""
        q = probabilities(scores)
        p = self.dense_p
        return float(np.mean(np.sum(p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30))), axis=1)))

    def _set(self, name: str, blobs) -> None:
        self.fwd.set(name, blobs)

    def restore(self) -> None:
        for l in self.layers:
            self._set(l.name, self.dense[l.name].blobs)

    # -- one layer

    def refit_layer(self, layer: Layer, m: Optional[rc.Moments], density: float):
        """(pruned and refitted weights in (out, in) order, the dense bias or None)."""
        blobs = self.dense[layer.name].blobs
        w = layer.rows(blobs[0])
        b = blobs[1] if len(blobs) > 1 else None
        mask = pruning.density_mask(w, density)
        if m is None or (mask.all() and m.exact):   # nothing pruned, inputs as the dense net's: w is the fit
            return np.where(mask, w, np.float32(0)), b
        # the rows rule reads the whole pool's rows, as the file's refit does: a fold's refit is the file's
        # on fewer images, not a refit of other channels (at 4/5 of the rows, LeNet-5's ip1 between 17%
        # and 22% would keep its pruned weights in every fold and be refitted in the file)
        return rc.refit(m, w, b, mask, self.ridge, rows=self.pool_rows(layer))[0], b

    def pool_rows(self, layer: Layer) -> int:
        """The rows of calibration data the whole pool gives the layer's refit (``rc.rows_per_image``)."""
        return rc.rows_per_image(layer.geometry, self.dense_inputs[layer.name].shape[1:]) * len(self.pool)

    def quantize_layer(self, layer: Layer, m: Optional[rc.Moments], wr: np.ndarray, bits: int):
        """(weights, bias or None, codebook, codes): ``wr`` (``refit_layer``) quantized, the bias corrected."""
        blobs = self.dense[layer.name].blobs
        b = blobs[1] if len(blobs) > 1 else None
        cb, codes = quantization.quantize_layer(wr, bits)
        wq = cb[codes]
        bq = b if (m is None or b is None) else rc.correct_bias(m, wq, layer.rows(blobs[0]), b)
        return layer.blob(wq), bq, cb, layer.blob(codes)

    def refit_share(self, layer: Layer, density: float) -> float:
        """The share of the layer's channels a refit at ``density`` fits (``rc.refittable``); 0 without a refit."""
        if layer.geometry is None:
            return 0.0
        blobs = self.dense[layer.name].blobs
        w = layer.rows(blobs[0])
        kept = pruning.density_mask(w, density).reshape(w.shape[0], -1).sum(axis=1)
        return float(np.mean(rc.refittable(self.pool_rows(layer), kept, len(blobs) > 1)))

    def _blobs(self, layer: Layer, wq, bq) -> list:
        return [wq] + ([bq] if bq is not None else []) + list(self.dense[layer.name].blobs[2:])

    # -- the choices

    def curves(self, grid: Sequence[float], widths: Sequence[Mapping[str, int]], progress=None,
               budget: Optional[float] = None) -> List[List[sens.Curve]]:
        """Each layer alone compressed at each density of ``grid`` and each set of ``widths``, scored out
        of fold on ``sensing`` (the pool, or on a deep net some folds of it: each fold's images by the
        refit on the other folds): one list of curves per set of widths.

        The score is minus the KL divergence of the net's class probabilities from the dense net's
        (baseline 0), not top-1: near the dense net's accuracy a few hundred images flip one at a
        time, and curves made of one-image steps share a budget out blindly, while the divergence
        moves smoothly with every output the layer changes. The budget itself is still read in top-1
        (``choose_rate``). A layer is refitted once per density, whatever its width, and the net is
        run from that layer on only (the dense net's state before it is kept). Densities are measured
        from the densest down, and once a layer alone, at every width, costs more than ``STOP_KL``, or
        changes the top-1 class of more than ``STOP_BUDGETS`` times the ``budget`` (points) of the
        images, no sparser one is: the allocation never sends it there, and on a deep net these points
        cost most."""
        out = [[] for _ in widths]
        leaves = [i for i, _ in self.sensing_groups]
        states = [self.net.start(g) for _, g in self.sensing_groups]
        order = np.argsort(np.concatenate([g for _, g in self.sensing_groups]), kind="stable")   # to ``sensing``'s order
        for l in self.layers:
            states = [self.net.advance(st, l.name)[1] for st in states]
            ms = self.dense_moments(l, leaves) if l.geometry is not None else [None] * len(leaves)
            dens, acc, flips = [], [], []
            for d in sorted(set(grid), reverse=True):
                if len(acc) > 1 and (-max(acc[-1]) > STOP_KL or (budget is not None and min(flips[-1]) > STOP_BUDGETS * budget)):
                    break                                # past any budget: sparser points are not measured
                wrs = [self.refit_layer(l, m, d)[0] for m in ms]
                dens.append(d)
                acc.append([])
                flips.append([])
                for bits in widths:
                    parts = []
                    for st, m, wr in zip(states, ms, wrs):
                        wq, bq, _, _ = self.quantize_layer(l, m, wr, bits[l.name])
                        self._set(l.name, self._blobs(l, wq, bq))
                        parts.append(self.net.finish(st))
                    scores = np.concatenate(parts)[order]
                    acc[-1].append(-self.divergence(scores))
                    flips[-1].append(100.0 * np.mean(scores.argmax(axis=1) != self.dense_top1[self.sensing]))
            self._set(l.name, self.dense[l.name].blobs)
            dens, acc = np.asarray(dens[::-1]), np.asarray(acc)[::-1].T      # ascending, as curves are
            for k, bits in enumerate(widths):
                out[k].append(sens.Curve(l.name, l.kind, int(self.dense[l.name].blobs[0].size), dens, acc[k]))
                if progress:
                    progress("  %-10s %-4s %d bits: KL from the dense net at density %s" % (l.name, l.kind, bits[l.name], "  ".join(
                        "%g%% %.4f" % (100 * d, -a) for d, a in zip(dens, acc[k]) if d in (1.0, 0.22, 0.1, 0.05, 0.025))))
        return out

    def compress(self, densities: Mapping[str, float], bits: Mapping[str, int],
                 leave: Optional[int] = None) -> Params:
        """The whole net, layer by layer in order, each refit on all folds but ``leave`` (None: the whole
        pool) seeing the compressed layers before it. The images are stepped through the net once: each
        layer's compressed inputs come from running only the layers since the one before it."""
        fit = self._others(leave)
        out: Params = type(self.dense)(self.dense)
        rows = self._rows(fit)
        try:
            for l, m in in_order(self.net, self.layers, fit, lambda l: self.dense_inputs[l.name][rows],
                                 lambda l: self.dense_moments(l, [leave])[0],
                                 lambda l: l.rows(self.dense[l.name].blobs[0])):
                wr, _ = self.refit_layer(l, m, densities[l.name])
                wq, bq, cb, codes = self.quantize_layer(l, m, wr, bits[l.name])
                blobs = self._blobs(l, wq, bq)
                self._set(l.name, blobs)
                out[l.name] = LayerParams(self.dense[l.name].type, blobs)
                quantization.attach_codebook(out, l.name, cb, codes)
            return out
        finally:
            self.restore()

    def cross_fit(self, densities: Mapping[str, float], bits: Mapping[str, int]) -> np.ndarray:
        """Per image of the pool (in ``pool`` order): correct when compressed with refits on the other folds
        (with one fold, on the pool itself)."""
        correct = np.zeros(len(self.pool), bool)
        for i, score in enumerate(self.folds):
            correct[self._rows(score)] = self.score(self.compress(densities, bits, i), score)
        return correct

    def score(self, params: Params, idx: np.ndarray) -> np.ndarray:
        """Per image of ``idx``: correct (or agreeing) with ``params``' compressed layers."""
        return top1_correct(self.outputs(params, idx), self.labels[idx])

    def outputs(self, params: Params, idx: np.ndarray) -> np.ndarray:
        """The net's output on the images ``idx`` with ``params``' compressed layers."""
        for l in self.layers:
            self._set(l.name, params[l.name].blobs)
        try:
            return self.scores(idx)
        finally:
            self.restore()


def fold_count(pool: int, layers: int) -> int:
    """``FOLDS`` (fewer, at least 2, when a fold of ``pool`` images would hold fewer than a quarter of the
    least calibration set), or 1, in sample, on a deep net (``CROSSFIT_WORK``).

    A candidate costs one compression a fold: on the half-width ResNet-50 (54 layers) one takes about
    10 s, so 5 folds would take the search past its 10 minutes. Fewer folds are no answer: a fold's
    refit then sees half the images, and there every candidate read past the budget (2 folds: 1.4 pp
    at 8x, where in sample the search chose 15.7x and lost 0.72 pp on the test set; docs/post-hoc.md)."""
    from caffe_dc.pycaffe.calibration import MIN_IMAGES

    if layers * FOLDS > CROSSFIT_WORK:
        return 1
    return max(2, min(FOLDS, pool // (MIN_IMAGES // 4)))


def split(n: int, holdout: float, seed: int = 0):
    """(the pool to refit and choose on, the held-out indices): a seeded permutation; each ascending."""
    perm = np.random.RandomState(seed).permutation(n)
    k = int(round(n * holdout))
    return np.sort(perm[k:]), np.sort(perm[:k])


def drop_bound(cmp: Mapping[str, float]) -> float:
    """The drop's upper bound, in points: minus the lower end of the paired interval (Tango's score
    interval, which does not condition on the number of discordant images, so that a few hundred
    images cost the rate, not the budget, and no flip at all still leaves some doubt)."""
    return -100.0 * cmp["diff_low"]


class Candidate(NamedTuple):
    target: Optional[float]
    densities: Dict[str, float]
    bits: Dict[str, int]
    correct: np.ndarray        # per image of both folds, out of sample (``Session.cross_fit``)
    cmp: dict                  # its paired comparison with the dense net, at CHOICE_ALPHA


class Menu:
    """Each layer's choices of (density, bits) as one curve the chooser's allocation reads.

    A layer measured at several bit widths has one sensitivity curve and one size row per width.
    Merged, the layer's axis is its record's size as a share ``p`` of its largest (the densest
    point at the most bits): at each ``p`` the width whose density for that size costs the least
    divergence (``drop_curve``'s conservative reading of each curve). The allocation
    (``allocation.least_drop``) then trades bytes between layers as it trades densities, with
    each curve's ``weights`` set so that its size formula gives the record's bytes (8 bits a byte,
    no index bits), and ``config`` turns its answer back into densities and bits."""

    POINTS = 64

    def __init__(self, layers: Sequence[Layer], curves: Mapping[int, List[sens.Curve]],
                 tables: Mapping[int, "SizeTable"]):
        self.tables, self.layers = tables, list(layers)
        self.curves, self.pick = [], {}
        for i, l in enumerate(self.layers):
            opts = []
            for b, cs in sorted(curves.items()):   # b: a key of ``tables``, one set of widths
                c, t = cs[i], tables[b]
                size = np.maximum.accumulate(t.sizes[l.name])          # bytes at t.grid, ascending density
                size = size[np.isin(t.grid, c.densities)]               # the densities measured (Session.curves)
                opts.append((b, np.log(c.densities), np.log(np.maximum(size, 1e-9)), sens.drop_curve(c, 0.0)))
            top = max(o[2][-1] for o in opts)
            p = np.exp(np.linspace(min(o[2][0] for o in opts) - top, 0.0, self.POINTS))
            best = np.full(p.size, np.inf)
            bits = np.zeros(p.size, int)        # the key of the table (the widths) picked at each point
            dens = np.ones(p.size)
            for b, x, ls, drop in opts:
                want = np.log(p) + top
                fits = want >= ls[0] - 1e-12
                d = np.interp(want, ls, x)                                # log-density of that size (<= 0)
                y = np.interp(d, x, drop)
                better = fits & (y < best - 1e-15)
                best[better], bits[better], dens[better] = y[better], b, np.exp(d[better])
            self.pick[l.name] = (p, bits, dens)
            self.curves.append(sens.Curve(l.name, l.kind, int(round(math.exp(top))), p, -best))
        self.size_bits = {l.name: 8 for l in self.layers}

    def config(self, shares: Mapping[str, float]):
        """(densities, bits) for each layer's size share ``p``: the pick at the nearest point at or below it."""
        dens, bits = {}, {}
        for n, v in shares.items():
            p, keys, _ = self.pick[n]
            i = max(0, int(np.searchsorted(p, v * (1 + 1e-9), side="right")) - 1)
            t = self.tables[int(keys[i])]
            bits[n] = t.bits[n]
            # the density whose record is exactly this share of the largest, at the picked width
            ls = np.log(np.maximum(np.maximum.accumulate(t.sizes[n]), 1e-9))
            top = math.log(self.curves[[c.name for c in self.curves].index(n)].weights)
            dens[n] = float(min(1.0, np.exp(np.interp(math.log(v) + top, ls, np.log(t.grid)))))
        return dens, bits

    def estimate(self, shares: Mapping[str, float]) -> float:
        total = max(t.fixed for t in self.tables.values())
        for n, v in shares.items():
            p, keys, _ = self.pick[n]
            i = max(0, int(np.searchsorted(p, v * (1 + 1e-9), side="right")) - 1)
            t = self.tables[int(keys[i])]
            total += t.layer_bytes(n, self.config({n: v})[0][n])
        return next(iter(self.tables.values())).dense_bytes / total


def choose_rate(s: Session, menu: Menu, max_drop: Optional[float], target: Optional[float],
                progress=None) -> (Candidate, List[Candidate], bool):
    """(the chosen candidate, every candidate tried, whether the budget was met)."""
    margin = min(0.99, (max_drop or 0.0) / 100.0)
    base = 0.0   # the curves' scores are minus a divergence from the dense net (Session.curves)
    tried: List[Candidate] = []
    curves = menu.curves

    def attempt(rate: float) -> Candidate:
        shares = least_drop(base, curves, rate, menu.size_bits, 0, menu.estimate, steps=24)
        dens, bits = menu.config(shares)
        correct = s.cross_fit(dens, bits)
        cmp = _paired(s.dense_correct[s.pool], correct, margin, CHOICE_ALPHA)
        cand = Candidate(rate, dens, bits, correct, cmp)
        tried.append(cand)
        if progress:
            progress("  candidate %.1fx: drop %+.2f pp on the %d calibration images (%s), bound %.2f pp"
                     % (rate, -100 * cmp["diff"], len(s.pool), s.scoring, drop_bound(cmp)))
        return cand

    if target is not None:
        c = attempt(target)
        return c, tried, True
    lo = menu.estimate({c.name: 1.0 for c in curves}) * 1.001
    hi = menu.estimate({c.name: float(c.densities[0]) for c in curves}) * 0.999
    best = search(attempt, lo, hi, max_drop)
    if best is None:
        return min(tried, key=lambda c: drop_bound(c.cmp)), tried, False
    return best, tried, True


def search(attempt, lo: float, hi: float, max_drop: float):
    """The largest rate in [lo, hi] in budget (the candidate ``attempt(rate)`` returned for it), or None.

    ``CANDIDATES`` rates spaced evenly in log, then ``REFINE`` bisections of the edge. Not more: each rate
    tried near the edge is another draw of a few images, and the best of more draws reads luckier than the
    file is (bisected until 3% apart, LeNet-300-100 with calibration seed 3 chose 68.8x on 1 image lost of
    700, where 67.2x and 70.5x read 2 and 4, and the file lost 0.56 pp on the test set; docs/post-hoc.md)."""
    tried = []

    def chosen():
        """The largest rate tried whose bound, read through the monotone fit over all rates tried, is in budget."""
        order = sorted(tried, key=lambda c: c.target)
        fitted = isotonic([drop_bound(c.cmp) for c in order])
        ok = [c for c, f in zip(order, fitted) if f <= max_drop + 1e-9]
        return (ok[-1] if ok else None), order

    # hi < lo: no layer's measured densities make its record smaller (a stop in Session.curves at a density
    # whose record is the dense one's), so there is one rate to try
    for r in np.exp(np.linspace(math.log(lo), math.log(hi), CANDIDATES)) if hi > lo else [hi]:
        tried.append(attempt(float(r)))
    best, order = chosen()
    for _ in range(REFINE if best is not None else 0):
        above = [c.target for c in order if c.target > best.target]
        if not above:
            break
        tried.append(attempt(math.sqrt(best.target * above[0])))
        best, order = chosen()
    return best


def isotonic(y: Sequence[float]) -> List[float]:
    """The non-decreasing sequence nearest to ``y`` in least squares (pool adjacent violators).

    A candidate's drop is measured on a few hundred images, so drops read along the rates go up and
    down by an image or two; the drop itself only grows with the rate. A budget read on the raw
    drops stops at the first unlucky rate, or passes a lucky one past it; read on this fit, a
    rate passes when the rates around it, pooled, stay within the budget."""
    blocks: List[List[float]] = []          # [sum, count]
    for v in y:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s_, n_ = blocks.pop()
            blocks[-1][0] += s_
            blocks[-1][1] += n_
    return [b[0] / b[1] for b in blocks for _ in range(int(b[1]))]


# ---------------------------------------------------------------- encode --calib

class Options(NamedTuple):
    max_drop: Optional[float] = None        # points of top-1 accuracy (needs labels)
    max_disagreement: Optional[float] = None  # points of top-1 disagreement with the dense net
    target_rate: Optional[float] = None
    density: Optional[Mapping[str, float]] = None   # given densities instead of a budget
    bits: Optional[Mapping[str, int]] = None
    bits_options: Sequence[int] = (3, 4, 5)
    holdout: float = HOLDOUT
    ridge: float = rc.RIDGE
    folds: Optional[int] = None             # None: FOLDS, fewer when a fold would hold too few images (``fold_count``)
    seed: int = 0
    best_effort: bool = False


class Result(NamedTuple):
    params: Params        # quantized, codebooks attached: what encode writes
    doc: dict             # the calibration section of --json
    met: bool             # the budget was met (always True without one)
    lines: List[str]      # the report


def _paired(a, b, margin: float, alpha: float) -> dict:
    return stats.paired(a, b, margin, alpha)


def _pp(x: float) -> str:
    return "%+.2f" % (100 * x)


def run_calibrated(net_param, params: Params, calib, opts: Options, work_dir: str, progress=print) -> Result:
    """Choose, compress and measure (module docstring); nothing is written here."""
    from caffe_dc.pycaffe import calibration
    t0 = time.time()
    agreement = opts.max_drop is None and (opts.max_disagreement is not None or calib.labels is None)
    if opts.max_drop is not None and calib.labels is None:
        raise InputError("--max-drop is in points of top-1 accuracy and needs labelled calibration data, and %s "
                         "has no labels: use --max-disagreement PP (top-1 disagreement with the uncompressed "
                         "model) or --target-rate X" % calib.source)
    layers = layers_of(net_param, params)
    n = calib.images.shape[0]
    pool_idx, held_idx = split(n, opts.holdout, opts.seed)
    folds = opts.folds or fold_count(len(pool_idx), len(layers))
    if min(len(pool_idx) // folds, len(held_idx)) < calibration.MIN_IMAGES // 4:
        raise InputError("a %.2f holdout of %d images leaves %d to refit and choose on (in %d folds) and %d to "
                         "report on: a fold and the held-out part each need %d"
                         % (opts.holdout, n, len(pool_idx), folds, len(held_idx), calibration.MIN_IMAGES // 4))
    opts = opts._replace(folds=folds)
    fold = -(-len(pool_idx) // folds)
    batch = -(-fold // -(-fold // 100))    # the largest fold in equal batches of at most 100 (the net's batch is fixed)
    fwd = calibration.forward_for(net_param, (batch,) + tuple(calib.images.shape[1:]), params, work_dir)
    s = Session(fwd, params, layers, calib.images, None if agreement else calib.labels, pool_idx, held_idx,
                opts.ridge, opts.folds, opts.seed)
    phases: Dict[str, float] = {}      # wall seconds of each phase, for --json (a deep net's cost is in its parts)
    last = [t0]

    def lap(name: str) -> None:
        phases[name] = round(time.time() - last[0], 1)
        last[0] = time.time()

    lap("dense_net")
    measure = MEASURES[agreement]
    progress("calibration: %d images from %s (%s), %d to refit and choose on (%d folds), %d held out; measuring "
             "%s; dense: %.2f%%" % (n, calib.source, calib.kind, len(pool_idx), opts.folds, len(held_idx), measure,
                                    100 * s.dense_correct[pool_idx].mean()))
    budget = opts.max_drop if opts.max_drop is not None else opts.max_disagreement
    if opts.density is not None:
        bits = {l.name: int((opts.bits or {}).get(l.name, layer_policy.default_bits(l.kind))) for l in layers}
        dens = {l.name: float(opts.density.get(l.name, 1.0)) for l in layers}
        correct = s.cross_fit(dens, bits)
        cand = Candidate(None, dens, bits, correct, _paired(s.dense_correct[s.pool], correct, 0.0, CHOICE_ALPHA))
        tried, met = [cand], True
    else:
        widths = [dict(opts.bits)] if opts.bits else [{l.name: b for l in layers} for b in sorted(set(opts.bits_options))]
        widths = [{l.name: int(given.get(l.name, layer_policy.default_bits(l.kind))) for l in layers} for given in widths]
        progress("sensitivity at %s bits (each layer alone, refitted, on %d of the choosing images):"
                 % (", ".join("/".join(sorted({str(v) for v in bits.values()})) for bits in widths), len(s.sensing)))
        curves = dict(enumerate(s.curves(GRID, widths, progress, budget)))
        lap("sensitivity")
        tables = {key: SizeTable(params, layers, bits, GRID) for key, bits in enumerate(widths)}
        menu = Menu(layers, curves, tables)
        lap("sizes")
        try:
            cand, tried, met = choose_rate(s, menu, budget, opts.target_rate, progress)
        except InputError as e:
            if not opts.best_effort:
                raise
            progress("  %s; --best-effort: the sparsest" % e)
            cand, tried, met = choose_rate(s, menu, budget, menu.estimate(
                {c.name: float(c.densities[0]) for c in menu.curves}), progress)
            met = False
    lap("candidates")
    final = s.compress(cand.densities, cand.bits)   # refitted on the whole pool
    lap("final")
    doc, lines = _report(s, calib, opts, params, layers, cand, tried, final, met, agreement, budget, t0)
    lap("report")
    doc["phase_seconds"] = phases
    return Result(final, doc, bool(met), lines)


class SizeTable:
    """The real encoder's file size for any densities, from one encoding per grid density.

    Every layer is pruned to each density of ``grid`` and quantized (``frontend.post_hoc``), the net
    encoded, and each layer's record size read from the file's figures; a layer's record at another
    density is read between its grid points (``layer_bytes``), the rest of the file (biases,
    header) is what it was. Records are independent of each other, so the sum is the file, to the
    difference the refit's values make to the Huffman codes; about 200 encodings that a search would
    make are replaced by a lookup (``layer_bytes``)."""

    def __init__(self, params: Params, layers: Sequence[Layer], bits: Mapping[str, int], grid: Sequence[float]):
        self.bits = dict(bits)
        self.grid = np.asarray(sorted(set(grid)))
        sizes = {l.name: [] for l in layers}
        fixed = []
        for d in self.grid:
            q = frontend.post_hoc(params, None, density={l.name: float(d) for l in layers}, bits=bits)
            data, st = frontend.encode_params(q, None, meta={})
            per = {b.name: b.pqh_bits / 8.0 for b in st.quantized}
            for l in layers:
                sizes[l.name].append(per[l.name])
            fixed.append(len(data) - sum(per.values()))
            self.dense_bytes = st.totals()["original_bits"] / 8.0
        self.sizes = {n: np.asarray(v) for n, v in sizes.items()}
        self.fixed = max(fixed)

    def layer_bytes(self, name: str, density: float) -> float:
        """The record's bytes at ``density``, read between grid points as a power of the density (the
        size of a record is about proportional to its kept weights), as ``Menu`` reads it back."""
        x = math.log(min(max(density, self.grid[0]), 1.0))
        return float(np.exp(np.interp(x, np.log(self.grid), np.log(np.maximum(self.sizes[name], 1e-9)))))


def _report(s: Session, calib, opts: Options, params: Params, layers: Sequence[Layer], cand: Candidate,
            tried: Sequence[Candidate], final: Params, met: bool, agreement: bool, budget: Optional[float],
            t0: float):
    """(the calibration's JSON section, the report's lines): the choice, and the file scored on the held-out part."""
    held_idx, pool_idx, n = s.held, s.pool, calib.images.shape[0]
    measure = MEASURES[agreement]
    rate = _file_rate(final)
    held_dense = s.dense_correct[held_idx]
    held_comp = s.score(final, held_idx)
    # the verdict's margin: the budget, or the project's default from the dense net's accuracy
    margin = budget / 100.0 if budget is not None else stats.default_margin(float(s.dense_correct[pool_idx].mean()))
    held = _paired(held_dense, held_comp, min(margin, 0.99), REPORT_ALPHA)
    what = "disagreement" if agreement else "drop"
    rows = [{"layer": l.name, "type": l.type, "weights": int(params[l.name].blobs[0].size),
             "density": round(float(cand.densities[l.name]), 5), "bits": int(cand.bits[l.name]),
             "refit": l.geometry is not None, "refit_share": round(s.refit_share(l, cand.densities[l.name]), 4)}
            for l in layers]
    doc = {"data": os.path.abspath(calib.source), "kind": calib.kind, "images": n,
           "choosing_images": int(len(pool_idx)), "sensitivity_images": int(len(s.sensing)), "folds": opts.folds, "held_out_images": int(len(held_idx)), "seed": opts.seed,
           "measure": "agreement" if agreement else "accuracy",
           "budget": {k: v for k, v in (("max_drop_pp", opts.max_drop), ("max_disagreement_pp", opts.max_disagreement),
                                        ("target_rate", opts.target_rate)) if v is not None},
           "met": bool(met), "rate": round(rate, 3), "layers": rows,
           "choosing": {"images": int(len(s.pool)), "dense": float(s.dense_correct[s.pool].mean()),
                        "compressed": float(cand.correct.mean()), "scoring": s.scoring,
                        "drop_pp": round(-100 * cand.cmp["diff"], 3), "drop_bound_pp": round(drop_bound(cand.cmp), 3),
                        "alpha": CHOICE_ALPHA},
           "held_out": {"dense": float(held_dense.mean()), "compressed": float(held_comp.mean()),
                        "drop_pp": round(-100 * held["diff"], 3),
                        "drop_interval_pp": [round(-100 * held["diff_high"], 3), round(-100 * held["diff_low"], 3)],
                        "comparison": held},
           "candidates": [{"target": None if t.target is None else round(t.target, 2),
                           "drop_pp": round(-100 * t.cmp["diff"], 3), "drop_bound_pp": round(drop_bound(t.cmp), 3)}
                          for t in tried],
           "ridge": opts.ridge, "seconds": round(time.time() - t0, 1)}
    from caffe_dc.base.tables import pct, text_table

    said = lambda r: "no" if not r["refit"] or not r["refit_share"] else "yes" if r["refit_share"] == 1 else \
        "%s of channels" % pct(r["refit_share"], 0)
    lines = [text_table(["layer", "type", "weights", "density", "bits", "refit"],
                        [[r["layer"], r["type"], r["weights"], pct(r["density"], 2), r["bits"], said(r)] for r in rows])]
    if any(said(r) != "yes" for r in rows):
        lines.append("refit: a layer refits only the channels that have %d rows of calibration data for each weight they "
                     "keep (the rest keep their pruned dense weights), and not at all a Deconvolution that crops or an "
                     "N-d convolution; each layer's bias is corrected after quantization" % rc.ROWS_PER_UNKNOWN)
    lines.append("held out (%d images, %s): dense %.2f%%, compressed %.2f%%: %s %s pp, 95%% interval [%s, %s]; "
                 "%s" % (len(held_idx), measure, 100 * held_dense.mean(), 100 * held_comp.mean(), what,
                         _pp(-held["diff"]).lstrip("+"), _pp(-held["diff_high"]), _pp(-held["diff_low"]),
                         stats.claim(held)))
    if budget is not None:
        lines.append("budget: %s <= %g pp on the %d calibration images, %s (bound %.2f pp): %s"
                     % (what, budget, len(s.pool), s.scoring, drop_bound(cand.cmp), "met" if met else "NOT met"))
    return doc, lines


def _file_rate(q: Params) -> float:
    data, st = frontend.encode_params(q, None, meta={})
    return st.totals()["original_bits"] / 8.0 / len(data)
