"""Solver hooks that hold a net to its masks and codebooks while Caffe trains it.

Caffe's SGD update is w -= m*h + lr*(dL/dw + wd*w). We act in the one place
the paper did, between backward and the update
(``Solver.add_callback(on_start, on_gradients_ready)``):

* pruning: a pruned weight gets a zero gradient. Its weight is 0.0 and its
  momentum history is 0.0 (a fresh solver, or a solverstate saved under the
  same hook), so the update adds exactly 0 and it stays exactly 0.0.
* trained quantization (group by index): every kept weight's gradient is
  replaced by the sum of the gradients of its cluster,
  dL/dC_k = sum_ij dL/dW_ij 1(I_ij = k). Weights of one cluster then hold the
  same value, get the same gradient, the same decay and the same momentum,
  so each moves exactly as its centroid would under SGD.

All index arrays are built once from the net's own ``L_mask`` / ``L_codes``
blobs, so per iteration the work is a gather, a ``bincount`` and a scatter
over the kept weights plus one memset. Equal weights stay bit-equal because
Caffe's update is elementwise (the tests check it after 100 steps, before any
re-snapping). ``sync_blobs`` still snaps every cluster to one representative
before a save, so a saved model is exactly ``codebook[codes]`` even under a
BLAS whose vector kernel rounded a tail element differently.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from caffe_dc.algorithms.pruning import MaskedDiff
from caffe_dc.algorithms.quantization import CentroidGrad, GroupedDiff
from caffe_dc.base.blobs import CODEBOOK, CODES, MASK, blob_name


class _Layer:
    __slots__ = ("name", "w", "d", "kernel", "kept", "codes", "K", "rep_idx", "rep_codes", "centroids",
                 "codebook_blob")

    def __init__(self, net, name: str, centroid_grad: CentroidGrad = CentroidGrad.SUM):
        self.name = name
        blob = net.params[name][0]
        self.w = blob.data.reshape(-1)
        self.d = blob.diff.reshape(-1)
        codes_key = blob_name(name, CODES)
        if codes_key in net.params:
            codes = np.rint(net.params[codes_key][0].data.reshape(-1)).astype(np.intp)
            cb = net.params[blob_name(name, CODEBOOK)][0].data.reshape(-1)
            self.kernel = GroupedDiff(codes, cb.size, centroid_grad)
            self.codes = self.kernel.codes
            self.codebook_blob = cb
            self.K = cb.size
            present, first = np.unique(self.codes, return_index=True)
            self.rep_codes = present
            self.rep_idx = self.kernel.kept[first]
            self.centroids = np.zeros(self.K, dtype=np.float32)
        else:
            self.kernel = MaskedDiff(net.params[blob_name(name, MASK)][0].data)
            self.codes = None
            self.codebook_blob = None
        self.kept = self.kernel.kept


class CompressionHooks:
    """Masks (and codebooks, when present) of every compressed layer in a solver's net.

    Construct after the compressed caffemodel is loaded into the solver's net
    (``solver.net.copy_from`` or ``solver.restore``); then ``install``.
    """

    def __init__(self, net, layers: Optional[List[str]] = None, centroid_grad: CentroidGrad = CentroidGrad.SUM):
        if layers is None:
            layers = [n[: -len("_" + MASK)] for n in net.params.keys() if n.endswith("_" + MASK)]
            layers += [n[: -len("_" + CODES)] for n in net.params.keys()
                       if n.endswith("_" + CODES) and n[: -len("_" + CODES)] not in layers]
        self.net = net
        self.layers = [_Layer(net, n, centroid_grad) for n in layers]
        self.quantized = [l for l in self.layers if l.codes is not None]
        self.enforce()

    @property
    def names(self) -> List[str]:
        return [l.name for l in self.layers]

    def enforce(self) -> None:
        """Put every weight on its mask and codebook (at start, and before saving)."""
        for l in self.layers:
            kept_vals = l.w[l.kept]
            l.w.fill(0.0)
            l.w[l.kept] = kept_vals
        for l in self.quantized:
            l.centroids[:] = l.codebook_blob
            l.w[l.kept] = l.centroids[l.codes]

    def on_start(self) -> None:
        """Nothing per iteration (see the module docstring); ``add_callback`` wants both hooks."""

    def snap(self) -> None:
        """Put every cluster's weights on its representative's value (the current centroid)."""
        for l in self.quantized:
            l.centroids[l.rep_codes] = l.w[l.rep_idx]
            l.w[l.kept] = l.centroids[l.codes]

    def on_gradients_ready(self) -> None:
        for l in self.layers:
            l.kernel(l.d)

    def install(self, solver) -> "CompressionHooks":
        solver.add_callback(self.on_start, self.on_gradients_ready)
        return self

    def sync_blobs(self) -> None:
        """Write the current centroids into the ``L_codebook`` blobs (before net.save / snapshot)."""
        self.snap()
        for l in self.quantized:
            l.codebook_blob[:] = l.centroids
            l.codebook_blob[0] = 0.0
