"""Sensitivity analysis on real Caffe: prune one layer at a time, no retraining, count correct images.

For each prunable layer and each density of a grid, the layer alone is
pruned by magnitude (``pruning.density_mask``), the net is run on a fixed
validation subset and the correctly classified images are counted; then the
layer's weights are put back. One TEST-phase net is loaded once. The
subset is read through the net's own Data layer once and kept in memory,
so every evaluation sees exactly the same images (Caffe's Data layer reads
on in a background thread and cannot be rewound); each evaluation runs the
net from the layer after the data.

Counting is per image, with the rule of Caffe's Accuracy layer (top-1: no
class scores strictly higher than the true one), on the blobs that the
net's Accuracy layer reads, so nothing is averaged over partial batches.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from caffe_dc.algorithms import prune_rules, pruning
from caffe_dc.base.layer_policy import kind as layer_kind
from caffe_dc.algorithms.sensitivity import density_grid
from caffe_dc.base import provenance
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import require_file
from caffe_dc.pycaffe import nets, rewrite, solving
from caffe_dc.pycaffe.caffemodel import load_net_proto, load_params, save_net_proto
from caffe_dc.pycaffe.datasets import lmdb_entries
from caffe_dc.stages.run import StageRecord

FORMAT = "caffe-dc-sensitivity"
DEFAULT_IMAGES = 2000
MAX_CACHE_BYTES = 2 << 30   # the cached subset; AlexNet's 227x227 crops take 0.6 MB an image


def net_param_for(net_or_prototxt: str):
    """(name, NetParameter): one of the registry's nets by name, or a train_val prototxt path."""
    if os.path.isfile(net_or_prototxt):
        return os.path.basename(net_or_prototxt), load_net_proto(net_or_prototxt)
    if os.sep in net_or_prototxt or net_or_prototxt.endswith(".prototxt"):
        raise InputError("no such prototxt: %s" % net_or_prototxt)
    spec = nets.get(net_or_prototxt)
    return spec.name, load_net_proto(spec.train_val)


def pick_batch(n: int, max_batch: int):
    """(images, batch) with batch dividing images (``nets.exact_batch``), or, if the largest such batch is
    tiny, n rounded down to a multiple of max_batch (a prime n must not mean batch 1)."""
    b = nets.exact_batch(n, max_batch)
    if n > max_batch and b * 4 < max_batch:
        return n - n % max_batch, max_batch
    return n, b


def accuracy_layer(net_param):
    """The TEST-phase top-1 Accuracy layer: (scores blob, label blob, axis, ignore_label or None)."""
    top1 = [a[:3] for a in solving.accuracy_layers(net_param) if a[3] == 1]
    if not top1:
        raise InputError("the net has no top-1 Accuracy layer in its TEST phase: sensitivity needs one "
                         "(a train_val prototxt, not a deploy one)")
    layer = [l for l in net_param.layer if l.type == "Accuracy" and (l.name, l.bottom[0], l.bottom[1]) == top1[0]
             and len(l.bottom) >= 2][0]
    ap = layer.accuracy_param
    return layer.bottom[0], layer.bottom[1], int(ap.axis), int(ap.ignore_label) if ap.HasField("ignore_label") else None


def with_lmdb(net_param, lmdb: str, batch: Optional[int] = None):
    """(a copy whose TEST Data layer reads ``lmdb`` in batches of ``batch``, if given; that layer)."""
    out = type(net_param)()
    out.CopyFrom(net_param)
    layers = nets.data_layers(out)
    layer = layers.get("test") or layers.get("train")
    if layer is None:
        raise InputError("the net has no Data layer to read the validation LMDB through "
                         "(sensitivity needs a train_val prototxt, not a deploy one)")
    layer.data_param.source = os.path.abspath(lmdb)
    if batch is not None:
        layer.data_param.batch_size = int(batch)
    return out, layer


def count_correct(scores: np.ndarray, labels: np.ndarray, axis: int = 1, ignore: Optional[int] = None):
    """(correct, counted) by Caffe's top-1 rule: correct when no class scores strictly above the label's."""
    s = np.moveaxis(np.asarray(scores), axis, -1)
    s = s.reshape(-1, s.shape[-1])
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    if lab.size != s.shape[0]:
        raise InputError("the Accuracy layer's label blob has %d values for %d score rows" % (lab.size, s.shape[0]))
    keep = np.ones(lab.size, bool) if ignore is None else lab != ignore
    s, lab = s[keep], lab[keep]
    if lab.size and (lab.min() < 0 or lab.max() >= s.shape[1]):
        raise InputError("labels out of range 0..%d in the validation LMDB" % (s.shape[1] - 1))
    true = s[np.arange(lab.size), lab]
    return int(((s > true[:, None]).sum(axis=1) == 0).sum()), int(lab.size)


class Evaluator:
    """One TEST net on a cached validation subset; ``correct()`` counts on the current weights."""

    def __init__(self, net_param, caffemodel: str, lmdb: str, images: int = DEFAULT_IMAGES,
                 batch: Optional[int] = None, work_dir: Optional[str] = None, verbose: bool = False):
        caffe = solving.import_caffe(verbose)
        require_file(caffemodel, "caffemodel")
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise InputError("the validation subset must be a positive number of images, got %r" % (images,))
        entries = lmdb_entries(lmdb)
        n = min(images, entries)
        _, data = with_lmdb(net_param, lmdb)
        max_batch = int(batch or data.data_param.batch_size or 100)
        self.images, self.batch = pick_batch(n, max_batch)
        param, data = with_lmdb(net_param, lmdb, self.batch)
        self.scores, self.label, self.axis, self.ignore = accuracy_layer(param)
        solving.check_matches(param, load_params(caffemodel), caffemodel)
        path = os.path.join(work_dir or ".", "sensitivity_net.prototxt")
        save_net_proto(param, path)
        self.prototxt = path
        self.net = caffe.Net(path, caffe.TEST, weights=caffemodel)
        types = [l.type for l in self.net.layers]
        names = list(self.net._layer_names)
        last = max(i for i, t in enumerate(types) if t == "Data")
        if last + 1 >= len(names):
            raise InputError("the net has nothing after its Data layer")
        self.start = names[last + 1]
        self.inputs = [b for i in range(last + 1) for b in self.net.top_names[names[i]]]
        # the subset, read once through the net's own Data layer (its transforms included)
        self.cache = []
        for i in range(self.images // self.batch):
            self.net.forward(end=names[last])
            if i == 0:
                need = sum(self.net.blobs[b].data.nbytes for b in self.inputs) * (self.images // self.batch)
                if need > MAX_CACHE_BYTES:
                    raise InputError("%d validation images take %.1f GB as the net's input: use fewer (--images)"
                                     % (self.images, need / 1e9))
            self.cache.append({b: self.net.blobs[b].data.copy() for b in self.inputs})
        self.entries = entries

    def correct(self) -> int:
        total = counted = 0
        for batch in self.cache:
            for b, v in batch.items():
                self.net.blobs[b].data[...] = v
            self.net.forward(start=self.start)
            c, n = count_correct(self.net.blobs[self.scores].data, self.net.blobs[self.label].data, self.axis,
                                 self.ignore)
            total += c
            counted += n
        self.counted = counted
        return total


def run_sensitivity(net_or_prototxt: str, caffemodel: str, lmdb: str, out_dir: str, images: int = DEFAULT_IMAGES,
                    grid: Optional[Sequence[float]] = None, layers: Optional[Sequence[str]] = None,
                    batch: Optional[int] = None, split: str = "validation", progress: bool = True,
                    verbose: bool = False, rule: str = prune_rules.DEFAULT) -> dict:
    """Measure every prunable layer's accuracy against density (pruned by ``rule``); returns the
    sensitivity.json document."""
    prune = prune_rules.rule(rule)
    name, param = net_param_for(net_or_prototxt)
    chosen = rewrite.select_layers(param, layers)
    types = {l.name: l.type for l in param.layer}
    grid = density_grid(None) if grid is None else sorted({pruning.validate_density(d) for d in grid} | {1.0},
                                                          reverse=True)
    os.makedirs(out_dir, exist_ok=True)
    ev = Evaluator(param, caffemodel, lmdb, images, batch, out_dir, verbose)
    t0 = time.time()
    base = ev.correct()
    n = ev.counted
    if progress:
        print("  %s: %d validation images (of %d) in batches of %d; dense: %d correct (%.2f%%)"
              % (name, n, ev.entries, ev.batch, base, 100.0 * base / n))
    out_layers: List[Dict] = []
    for lname in chosen:
        blob = ev.net.params[lname][0]
        orig = blob.data.copy()
        correct = []
        try:
            for d in grid:
                if d == 1.0:
                    correct.append(base)
                    continue
                blob.data[...] = np.where(prune.mask(orig, d), orig, np.float32(0))
                correct.append(ev.correct())
        finally:
            blob.data[...] = orig
        kind = layer_kind(types[lname])
        out_layers.append({"name": lname, "type": types[lname], "kind": kind, "weights": int(orig.size),
                           "densities": list(grid), "correct": correct, "accuracy": [c / n for c in correct]})
        if progress:
            print("  %-8s %-4s %9d weights; accuracy at density %s" % (lname, kind, orig.size, ", ".join(
                "%g%% %.2f%%" % (100 * d, 100.0 * c / n) for d, c in zip(grid, correct) if d in (0.5, 0.2, 0.1, 0.05))))
    # the weights are back: a last dense count must match the first (a check that nothing leaked)
    if ev.correct() != base:
        raise RuntimeError("weights were not restored: the dense count changed")
    return {
        "format": FORMAT, "version": 1, "net": name, "caffemodel": os.path.abspath(caffemodel),
        "lmdb": os.path.abspath(lmdb), "split": split, "images": n, "batch": ev.batch,
        "method": "one layer pruned alone by %s, no retraining; top-1 counted per image"
                  % ("magnitude (density_mask)" if rule == prune_rules.DEFAULT else "the %r rule" % rule),
        "baseline": {"correct": base, "accuracy": base / n},
        "grid": list(grid), "layers": out_layers, "seconds": round(time.time() - t0, 1),
        "environment": provenance.environment(),   # the commit and BLAS kernel, as every result file names
    }



# ---------------------------------------------------------------- the pipeline's stage

SKIPPED = "the schedule gives densities; a budget (--target-rate / --max-drop) measures them"
PIPELINE_IMAGES = 5000   # the whole of a default validation split: a choice steadier than on 2000 images


def wanted(r) -> bool:
    return bool(r.budget)


def _images(r) -> int:
    return min(int(r.budget.get("images", PIPELINE_IMAGES)), int(r.info.split("val")[1]))


def stage_inputs(r) -> dict:
    return {"images": _images(r), "grid": density_grid(None)}


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """The curves (``sensitivity``: the sensitivity.json path) and the dense net's score they start from."""
    sensitivity: str
    baseline: dict
    images: int


def run_stage(r) -> Record:
    """Each prunable layer of the run's own reference pruned alone, scored on the run's validation split."""
    import json

    from caffe_dc.base.fileio import atomic_write

    lmdb, _ = r.info.split("val")
    doc = run_sensitivity(r.base_path, r.out("reference").caffemodel, lmdb, r.folder(),
                          images=_images(r), progress=r.progress)
    path = r.folder("sensitivity.json")
    atomic_write(path, json.dumps(doc, indent=2).encode())
    return Record(sensitivity=path, baseline=doc["baseline"], images=doc["images"])
