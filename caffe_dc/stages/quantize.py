"""Stage 2 on real Caffe: k-means codebooks, then group-by-index fine-tuning.

Input is a pruned caffemodel (its ``L_mask`` blobs say what was pruned; a
dense model is accepted too, with nothing masked). Each layer's nonzero
weights are clustered (``quantization.py``); the caffemodel gains
``L_codebook`` and ``L_codes`` blobs, the net is rewritten to hold them, and
the centroids are trained through the hooks. The result is self-describing:
the encoder reads the codebook and codes straight from it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Dict, List, Mapping, NamedTuple, Optional

import numpy as np

from caffe_dc.pycaffe import nets
from caffe_dc.algorithms import quantization
from caffe_dc.algorithms.early_stopping import EarlyStopping
from caffe_dc.pycaffe import rewrite
from caffe_dc.pycaffe import solving
from caffe_dc.base import defaults, layer_policy
from caffe_dc.base.blobs import CODEBOOK, CODES, MASK, blob_name
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.base.fileio import atomic_path, atomic_write
from caffe_dc.pycaffe.caffemodel import load_params, save_net_proto, save_params
from caffe_dc.base.errors import InputError
from caffe_dc.base.limits import check_bits
from caffe_dc.pycaffe.solving import check_matches
from caffe_dc.pycaffe.retraining import KeepBest, evaluations, retrain
from caffe_dc.base.tables import text_table
from caffe_dc.stages.run import Run, StageRecord, indent


# A fine-tuning that ends this many points of validation accuracy below its clustered start has
# diverged (the paper's summed centroid gradients give a cluster of thousands of weights a step
# thousands of times a weight's); the best evaluation, the clustered start included, is what is kept,
# so such a fine-tuning never is, and this names why.
COLLAPSE_PP = 5.0
# Validation evaluations over a fine-tuning, evenly spaced; the best is kept (the clustered start included).
FINETUNE_EVALS = 10


def collapsed(before: float, after: float) -> bool:
    """Did the fine-tuning collapse (accuracies as fractions)?"""
    return 100.0 * (before - after) > COLLAPSE_PP


class QuantConfig(NamedTuple):
    bits: Optional[Dict[str, int]] = None       # per layer; default: the paper's for this net
    init: str = "linear"
    iters: int = 2000
    lr_factor: float = defaults.LR_FACTOR
    seed: int = 0
    snapshot_every: int = 1000
    centroid_grad: str = "sum"                  # quantization.CentroidGrad: how a cluster's gradients combine


def compressed_layers(params: Params, base, bits: Optional[Mapping[str, int]] = None) -> List[str]:
    """Layers that carry a mask (pruned) or are given bits (quantized though dense: a budget counted them at
    those bits); all prunable layers if there are none."""
    names = rewrite.prunable_layers(base)
    chosen = [n for n in names if blob_name(n, MASK) in params or n in (bits or {})]
    return chosen or names


def quantize_params(params: Params, layers: List[str], bits: Mapping[str, int], init, seed: int):
    """Cluster each layer; returns (params with codebook/codes blobs, {layer: info})."""
    out = type(params)(params)
    info = {}
    for n in layers:
        lp = params[n]
        w = lp.blobs[0]
        codebook, codes = quantization.quantize_layer(w, bits[n], init=init, seed=seed)
        wq = codebook[codes].astype(np.float32)
        out[n] = LayerParams(lp.type, [wq] + list(lp.blobs[1:]))
        mask = (codes != 0)
        # The codes subsume the mask (code 0 = pruned); dropping the mask blob saves Caffe a
        # full-size parameter update per iteration.
        out.pop(blob_name(n, MASK), None)
        quantization.attach_codebook(out, n, codebook, codes)
        kept = int(mask.sum())
        k = 2 ** bits[n]
        info[n] = {"weights": int(w.size), "kept": kept, "bits": int(bits[n]), "codebook_size": k,
                   "centroids_used": int(np.unique(codes[mask]).size),
                   "rate_formula": quantization.compression_rate(kept, 32, k) if kept else None,
                   "codebook_init": codebook.tolist()}
    return out, info


def run_quantization(net, pruned_model: str, info, out_dir: str, cfg: QuantConfig,
                     progress: bool = True, verbose: bool = False, only: Optional[List[str]] = None) -> dict:
    """Quantize and fine-tune the pruned layers and those ``cfg.bits`` names; ``only`` restricts quantization
    to those layers (the rest stay float, still masked), as in the paper's conv-vs-fc bits study. ``net``: a
    registry name (read on ``info``) or a ``nets.NetSource`` (any net)."""
    src = nets.source(net, info)
    info = src.info
    os.makedirs(out_dir, exist_ok=True)
    base = src.train_val
    params = load_params(pruned_model)
    check_matches(base, params, pruned_model)
    masked = compressed_layers(params, base, cfg.bits)
    if only is not None:
        bad = [n for n in only if n not in masked]
        if bad:
            raise InputError("cannot quantize %s: not a compressed layer (%s)" % (", ".join(bad), ", ".join(masked)))
    layers = [n for n in masked if only is None or n in only]
    bits = _layer_bits(src, layers, cfg.bits)
    init = quantization.Init.parse(cfg.init)
    test_iter = solving.test_iters_for(base, info.split("val")[1])
    base_path = os.path.join(out_dir, "base_train_val.prototxt")
    save_net_proto(base, base_path)
    solver0 = src.solver_for(base_path, os.path.join(out_dir, "snap"))

    shapes = {n: params[n].blobs[0].shape for n in masked}
    kinds = {n: [CODEBOOK, CODES] if n in layers else [MASK] for n in masked}
    net = rewrite.add_blobs(base, shapes, kinds, {n: 2 ** bits[n] for n in layers})
    kept = {n: float(np.count_nonzero(params[n].blobs[0])) / params[n].blobs[0].size for n in masked}
    rewrite.adjust_dropout(net, kept)
    tv = os.path.join(out_dir, "train_val.prototxt")
    save_net_proto(net, tv)

    init_path, linfo = _clustered(params, masked, layers, bits, init, cfg.seed, out_dir)
    pruned_acc = solving.accuracy_of(solving.evaluate(base_path, pruned_model, test_iter, verbose))
    before = solving.accuracy_of(solving.evaluate(tv, init_path, test_iter, verbose))
    if progress:
        print("  clustered (%s init): val accuracy %.2f%% before fine-tuning (pruned model: %.2f%%)"
              % (init.name.lower(), 100 * before, 100 * pruned_acc))
    final = os.path.join(out_dir, "quantized.caffemodel")
    sp = rewrite.retrain_solver(solver0, cfg.lr_factor)
    hist, kept = _fine_tune(tv, sp, init_path, out_dir, cfg, test_iter, final, before, progress, verbose)
    rows = _fine_tuned_rows(load_params(final), layers, linfo)
    metrics = {
        "net": src.name, "dataset": info.name, "pruned_caffemodel": pruned_model, "init": init.name.lower(),
        "accuracy_pruned": pruned_acc, "accuracy_before_finetune": before, "layers": linfo, "history": hist,
        "caffemodel": final, "prototxt": tv, "config": cfg._asdict(),
    }
    metrics.update(kept)
    atomic_write(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2).encode())
    metrics["table"] = text_table(["layer", "kept", "bits", "codebook", "distinct", "r=nb/(n log2k+kb)"], rows)
    return metrics


def fine_tune_rule(iters: int) -> Optional[EarlyStopping]:
    """The fine-tuning's evaluations on the validation split: ``FINETUNE_EVALS`` of them, evenly spaced, never
    stopping early (a patience past any count of evaluations); None for no fine-tuning."""
    if iters < 1:
        return None
    return EarlyStopping(-(-iters // FINETUNE_EVALS), iters + 1, iters)


def _fine_tune(tv: str, sp, init_path: str, out_dir: str, cfg: QuantConfig, test_iter: int, final: str,
               before: float, progress: bool, verbose: bool):
    """Train the centroids from the clustered model ``init_path`` to ``final``, keeping the best validation
    evaluation, the clustered start included (so a fine-tuning that made things worse, or diverged, is not
    kept). Returns the test history and {accuracy, accuracy_last, best_iter, fine_tune_discarded}. A finished
    fine-tuning (``final`` and its metrics written) is read back and decided again from its history."""
    rule = fine_tune_rule(cfg.iters)
    if os.path.isfile(final) and os.path.isfile(os.path.join(out_dir, "metrics.json")):
        with open(os.path.join(out_dir, "metrics.json")) as f:
            hist = json.load(f)["history"]
    else:
        work = os.path.join(out_dir, "retrain")
        keeper = KeepBest(rule, work) if rule else None
        hist = retrain(tv, sp, init_path, work, cfg.iters, test_iter, final, desc="quantize",
                       snapshot_every=cfg.snapshot_every, progress=progress, verbose=verbose,
                       centroid_grad=quantization.CentroidGrad.parse(cfg.centroid_grad),
                       eval_every=rule.eval_every if rule else 0, on_eval=keeper)
        if keeper:
            keeper.clear()
    last = solving.accuracy_of(hist[-1])
    if rule is None:
        return hist, {"accuracy": last, "accuracy_last": last, "best_iter": 0, "fine_tune_discarded": None}
    d = rule.decide(evaluations(hist))
    out = {"accuracy": d.best, "accuracy_last": last, "best_iter": d.best_iter, "fine_tune_discarded": None}
    if d.best <= before:   # a tie is no progress (the rule's own): the start, which took no training, is kept
        why = ("collapsed (validation %.2f%% -> %.2f%%)" % (100 * before, 100 * last) if collapsed(before, last) else
               "did not beat its clustered start on validation (%.2f%%; its best %.2f%%)"
               % (100 * before, 100 * d.best))
        out.update(accuracy=before, best_iter=0, fine_tune_discarded="the fine-tuning %s; the clustered model is kept"
                   % why)
        print("  warning: %s (try --centroid-grad mean or a smaller lr_factor)" % out["fine_tune_discarded"])
        with atomic_path(final) as tmp:
            shutil.copyfile(init_path, tmp)
    elif progress:
        print("  fine-tuning: val accuracy %.2f%% at iteration %d, the best of %d evaluations (last %.2f%%)"
              % (100 * d.best, d.best_iter, len(hist), 100 * last))
    return hist, out


def _layer_bits(src, layers: List[str], given: Optional[Dict[str, int]]) -> Dict[str, int]:
    """Each quantized layer's bits: the layer policy's default, or the config's (checked)."""
    types = {l.name: l.type for l in src.train_val.layer}
    bits = {n: layer_policy.default_bits(types[n], src.name if src.paper else None, n) for n in layers}
    for n, b in (given or {}).items():
        if n not in bits:
            raise InputError("no compressed layer named %r (layers: %s)" % (n, ", ".join(layers)))
        bits[n] = check_bits(b)
    return bits


def _clustered(params, masked: List[str], layers: List[str], bits: Dict[str, int], init, seed: int,
               out_dir: str):
    """(path, per-layer cluster info) of the k-means quantized model fine-tuning starts from; made once,
    read back on a rerun (k-means on the same weights gives the same codebooks, but need not run twice)."""
    init_path = os.path.join(out_dir, "clustered.caffemodel")
    info_path = os.path.join(out_dir, "clusters.json")
    if os.path.isfile(init_path) and os.path.isfile(info_path):
        with open(info_path) as f:
            return init_path, json.load(f)
    qparams, linfo = quantize_params(params, layers, bits, init, seed)
    for n in [m for m in masked if m not in layers]:  # float layers keep (or get) a mask: zeros stay zero
        key = blob_name(n, MASK)
        if key not in qparams:
            qparams[key] = LayerParams("Parameter", [(params[n].blobs[0] != 0).astype(np.float32)])
    save_params(qparams, init_path)
    atomic_write(info_path, json.dumps(linfo).encode())
    return init_path, linfo


def _fine_tuned_rows(qp, layers: List[str], linfo: dict) -> List[list]:
    """The console table's rows; adds each layer's final codebook and distinct values to ``linfo``."""
    rows = []
    for n in layers:
        linfo[n]["codebook_final"] = qp[blob_name(n, CODEBOOK)].blobs[0].tolist()
        linfo[n]["distinct_nonzero"] = int(np.unique(qp[n].blobs[0][qp[n].blobs[0] != 0]).size)
        r = linfo[n]["rate_formula"]
        rows.append([n, linfo[n]["kept"], linfo[n]["bits"], linfo[n]["codebook_size"], linfo[n]["distinct_nonzero"],
                     "%.1fx" % r if r else None])
    return rows


# ---------------------------------------------------------------- the pipeline's stage

def _bits(r: Run) -> Optional[Dict[str, int]]:
    """The schedule's bits: every layer it names is quantized, pruned or not. A layer a budget leaves dense
    was counted at its bits, and stored as float32 it would miss the rate (LeNet-5's 41x gave 28x so)."""
    return r.schedule.bits


def stage_inputs(r: Run) -> dict:
    return {"bits": _bits(r), "init": r.opts.init.value, "quant_iters": r.schedule.finetune_iters,
            "lr_factor": r.lr_factor, "seed": r.opts.seed, "centroid_grad": r.schedule.centroid_grad}


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """The quantized, fine-tuned model (and its train_val), its validation accuracy before and after the
    fine-tuning, whether the fine-tuning was discarded and why, and each layer's bits."""
    caffemodel: str
    prototxt: str
    accuracy: float
    init: str
    accuracy_before_finetune: float
    bits: Dict[str, int]
    fine_tune_discarded: Optional[str] = None    # why the fine-tuned model was set aside (runs before it lack it)
    best_iter: Optional[int] = None              # the fine-tuning's kept evaluation, and its last one's accuracy
    accuracy_last: Optional[float] = None
    OPTIONAL = ("fine_tune_discarded", "best_iter", "accuracy_last")


def run_stage(r: Run) -> Record:
    cfg = QuantConfig(bits=_bits(r), init=r.opts.init.value, iters=r.schedule.finetune_iters, lr_factor=r.lr_factor,
                      seed=r.opts.seed, snapshot_every=r.snapshot_every, centroid_grad=r.schedule.centroid_grad)
    m = run_quantization(r.src, r.out("prune").caffemodel, r.info, r.folder(), cfg, progress=r.progress)
    print(indent(m["table"]))
    return Record(caffemodel=m["caffemodel"], prototxt=m["prototxt"], accuracy=m["accuracy"], init=m["init"],
                  accuracy_before_finetune=m["accuracy_before_finetune"],
                  fine_tune_discarded=m["fine_tune_discarded"], best_iter=m["best_iter"],
                  accuracy_last=m["accuracy_last"], bits={n: v["bits"] for n, v in m["layers"].items()})
