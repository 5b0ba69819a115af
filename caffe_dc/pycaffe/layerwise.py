"""Layer-wise reconstruction through the net itself: each layer refitted, in net order, to the dense net's outputs.

Post-hoc compression (``stages.posthoc``: ``encode --calib``) and pruning
with ``reconstruct`` (``stages.prune``) share this:

* ``layers_of``: the compressible layers and how each reads its input
  (``algorithms.reconstruction.Geometry``);
* ``Images``: arrays run through a ``calibration.Forward`` in its fixed batch,
  whole (``scores``, ``inputs``) or stepped layer by layer (``start``,
  ``advance``, ``finish``: each step runs only the layers since the last);
* ``in_order``: the layers in net order, each with the moments of its inputs
  in the net as it now stands against the dense net's, so a refit sees the
  layers before it as the caller has already changed them;
* ``reconstruct``: a pruned net's kept weights refitted and its biases
  corrected that way (``refit``, ``correct_bias``), as a prune round starts.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.algorithms import reconstruction as rc
from caffe_dc.base import layer_policy
from caffe_dc.base.errors import InputError
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.codec.caffe_proto import layer_type

MAX_CACHE_BYTES = 1 << 30  # the dense net's layer inputs kept for the refits
CHUNK = 256                # images whose patches go into the moments at once


class Layer(NamedTuple):
    name: str
    type: str
    kind: str
    geometry: Optional[rc.Geometry]   # None: no refit (an N-d convolution, a cropping Deconvolution): pruned and quantized only
    transpose: bool                   # an InnerProduct with transposed weights (in, out)
    deconv: bool = False              # a Deconvolution: refitted as the convolution it equals (rc.deconvolution)

    def rows(self, w: np.ndarray) -> np.ndarray:
        """The layer's weights as the refit reads them: one row (or filter) per output channel."""
        if self.transpose:
            return w.T
        return rc.as_convolution(w, self.geometry.group) if self.deconv and self.geometry else w

    def blob(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` undone: the layer's own weight layout (for weights or codes)."""
        if self.transpose:
            return rows.T.copy()
        return rc.from_convolution(rows, self.geometry.group) if self.deconv and self.geometry else rows


def layers_of(net_param, params: Params) -> List[Layer]:
    """The compressible layers in net order, with how each reads its input."""
    out = []
    for l in net_param.layer:
        t = layer_type(l)
        if not layer_policy.is_prunable(t) or l.name not in params or any(o.name == l.name for o in out):
            continue
        geom, transpose = None, False
        if t == "InnerProduct":
            ip = l.inner_product_param
            if int(ip.axis) in (1, -3):
                geom, transpose = rc.Geometry.dense(), bool(ip.transpose)
        elif params[l.name].blobs[0].ndim == 4 and int(l.convolution_param.axis) == 1:
            cp = l.convolution_param
            two = lambda rep, h, w, has, d: (int(h), int(w)) if has else (tuple(int(v) for v in rep) * 2)[:2] if len(rep) else (d, d)
            window = (two(cp.kernel_size, cp.kernel_h, cp.kernel_w, cp.HasField("kernel_h"), 1),
                      two(cp.stride, cp.stride_h, cp.stride_w, cp.HasField("stride_h"), 1),
                      two(cp.pad, cp.pad_h, cp.pad_w, cp.HasField("pad_h"), 0),
                      two(cp.dilation, 0, 0, False, 1), int(cp.group))
            geom = rc.deconvolution(*window) if t == "Deconvolution" else rc.Geometry(*window)
        out.append(Layer(l.name, t, layer_policy.kind(t), geom, transpose, t == "Deconvolution"))
    if not out:
        raise InputError("the net has no Convolution or InnerProduct layers to compress")
    return out


def chunks(a: np.ndarray, rows: int = CHUNK):
    for lo in range(0, a.shape[0], rows):
        yield a[lo:lo + rows]


class Images:
    """Arrays ``x`` (N, C, H, W), preprocessed for the net, run through ``fwd`` (``calibration.Forward``)."""

    def __init__(self, fwd, x: np.ndarray):
        self.fwd, self.x = fwd, x

    def batches(self, idx: np.ndarray):
        """(batch, real images in it) of the images ``idx``; the net's batch is fixed, so the last is padded
        with copies, read back only for the real images."""
        b = self.fwd.batch
        for lo in range(0, len(idx), b):
            part = self.x[idx[lo:lo + b]]
            n = part.shape[0]
            if n < b:
                part = np.concatenate([part, np.repeat(part[-1:], b - n, axis=0)])
            yield part, n

    def scores(self, idx: np.ndarray) -> np.ndarray:
        return np.concatenate([self.fwd.scores(x)[:n] for x, n in self.batches(idx)])

    def inputs(self, idx: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        """The arrays the layers ``names`` read, for the images ``idx``, as the net now stands."""
        parts: Dict[str, list] = {n: [] for n in names}
        for x, n in self.batches(idx):
            for k, v in self.fwd.inputs(x, names).items():
                parts[k].append(v[:n].astype(np.float32))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def cached_inputs(self, idx: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        """``inputs``, refused in one line when they would take more than ``MAX_CACHE_BYTES``."""
        first = next(self.batches(idx[:1]))[0]
        need = sum(int(np.prod(a.shape[1:])) * 4 for a in self.fwd.inputs(first, names).values())
        if need * len(idx) > MAX_CACHE_BYTES:
            raise InputError("the layers' inputs for %d calibration images take %.1f GB: use fewer images"
                             % (len(idx), need * len(idx) / 1e9))
        return self.inputs(idx, names)

    # -- stepping through the net: each step runs only the layers since the last one

    def start(self, idx: np.ndarray) -> list:
        return [(self.fwd.start(x), n) for x, n in self.batches(idx)]

    def advance(self, states: list, layer: str):
        """(the layer's input for the images of ``states``, the states moved to just before it)."""
        xs, moved = [], []
        for st, n in states:
            x, st = self.fwd.advance(st, layer)
            xs.append(x[:n])
            moved.append((st, n))
        return np.concatenate(xs), moved

    def finish(self, states: list) -> np.ndarray:
        return np.concatenate([self.fwd.finish(st).reshape(self.fwd.batch, -1)[:n] for st, n in states])


def moments(geometry: rc.Geometry, xc: np.ndarray, xd: Optional[np.ndarray] = None,
            weights: Optional[np.ndarray] = None) -> rc.Moments:
    """The moments of inputs ``xc`` against the dense net's ``xd`` (None: the same), added a chunk at a time;
    ``weights``: the dense weights the refit targets (``rc.Moments``: then only ``X_c^T X_d w`` is kept)."""
    m = rc.Moments(geometry, weights)
    for lo in range(0, xc.shape[0], CHUNK):
        m.add(xc[lo:lo + CHUNK], None if xd is None else xd[lo:lo + CHUNK])
    return m


def in_order(images: Images, layers: Sequence[Layer], idx: np.ndarray, dense: Callable[[Layer], np.ndarray],
             dense_moments: Optional[Callable[[Layer], rc.Moments]] = None,
             weights: Optional[Callable[[Layer], np.ndarray]] = None) -> Iterator[Tuple[Layer, Optional[rc.Moments]]]:
    """Each of ``layers`` in net order with the moments of its inputs (None: no refit), for the images ``idx``:
    its inputs in the net as it stands when the layer is reached (``X_c``) against the dense net's
    (``dense(layer)``: ``X_d`` of the same images). The caller sets the layer's new weights in
    ``images.fwd`` before taking the next, so each layer's ``X_c`` comes from the layers before it as
    changed. The images are stepped through the net once. ``dense_moments``: the net is the dense one
    until the first layer is yielded, whose moments these are (they may be cached; the stepping then
    starts only where a later layer needs it). ``weights``: each layer's dense weights, as its refit
    reads them, when only those are refitted to (``moments``)."""
    unchanged = dense_moments is not None
    states = None
    if any(l.geometry is not None for l in (layers[1:] if unchanged else layers)):
        states = images.start(idx)
    for l in layers:
        xc = None
        if states is not None:
            xc, states = images.advance(states, l.name)
        m = None
        if l.geometry is not None:
            m = dense_moments(l) if unchanged else moments(l.geometry, xc, dense(l), weights(l) if weights else None)
        yield l, m
        unchanged = False


def reconstruct(images: Images, layers: Sequence[Layer], dense: Params, start: Params,
                masks: Mapping[str, np.ndarray], ridge: float = rc.RIDGE) -> Tuple[Params, Dict[str, float]]:
    """``start`` (a pruned net: the layers of ``masks`` pruned to them) with those layers' kept weights and
    biases refitted, in net order, so that each reproduces the ``dense`` net's output of that layer on
    all of ``images``, seeing the layers before it as already refitted; each bias is then corrected
    (``correct_bias``: it fixes the channels the refit had too few rows for). A layer keeps ``start``'s
    weights where the refit does not reach them (``refit``'s ``start``). Returns the net and, per
    layer, the share of its channels refitted (``refittable``)."""
    idx = np.arange(images.x.shape[0])
    todo = [l for l in layers if l.name in masks and l.geometry is not None]
    names = images.fwd.param_names()
    for name in names:
        images.fwd.set(name, dense[name].blobs)
    xd = images.cached_inputs(idx, [l.name for l in todo])
    for name in names:   # every layer as it now is (a later round's were retrained), the pruned ones as pruned
        blobs = list(start[name].blobs)
        if name in masks:
            blobs[0] = np.where(masks[name], blobs[0], np.float32(0))
        images.fwd.set(name, blobs)
    out: Params = type(start)(start)
    shares = {}
    for l, m in in_order(images, todo, idx, lambda l: xd[l.name]):
        w_ref, b_ref = l.rows(dense[l.name].blobs[0]), _bias(dense[l.name])
        w0, b0 = l.rows(start[l.name].blobs[0]), _bias(start[l.name])
        mask = l.rows(masks[l.name])
        w, _ = rc.refit(m, w_ref, b_ref, mask, ridge, start=(w0, b0))
        blobs = [l.blob(w).astype(np.float32)]
        if b_ref is not None:
            blobs.append(rc.correct_bias(m, w, w_ref, b_ref))
        blobs += list(start[l.name].blobs[len(blobs):])
        out[l.name] = LayerParams(start[l.name].type, blobs)
        images.fwd.set(l.name, blobs)
        kept = mask.reshape(mask.shape[0], -1).sum(axis=1)
        shares[l.name] = float(np.mean(rc.refittable(m.n, kept, b_ref is not None)))
    return out, shares


def _bias(lp: LayerParams) -> Optional[np.ndarray]:
    return lp.blobs[1] if len(lp.blobs) > 1 else None
