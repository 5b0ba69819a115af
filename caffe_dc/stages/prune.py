"""Stage 1 on real Caffe: iterative prune -> retrain with mask blobs and hooks.

Each round picks masks on the current weights (``pruning.py``), writes a
caffemodel carrying ``L_mask`` blobs, rewrites the net to hold them
(``rewrite.py``), and retrains with the mask hooks (``retraining.py``).
A round whose retrained model exists is not redone, so a rerun after a kill
picks up where it stopped.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from caffe_dc.pycaffe import nets
from caffe_dc.algorithms import pruning
from caffe_dc.pycaffe import rewrite
from caffe_dc.pycaffe import solving
from caffe_dc.base.blobs import MASK, blob_name
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe.caffemodel import load_params, load_solver_proto, save_net_proto, save_params
from caffe_dc.stages.run import Run, indent
from caffe_dc.base.errors import InputError
from caffe_dc.pycaffe.retraining import retrain
from caffe_dc.base.tables import pct, text_table


class PruneConfig(NamedTuple):
    densities: Optional[Dict[str, float]] = None   # per-layer final density (kept fraction)
    qualities: Optional[Dict[str, float]] = None   # per-layer quality: threshold = q * std
    rounds: int = 3
    iters_per_round: int = 4000
    lr_factor: float = 0.1
    snapshot_every: int = 1000
    # per-layer density after each round (a schedule file's); default: geometric steps to ``densities``
    round_densities: Optional[Dict[str, List[float]]] = None



def masks_of(params: Params, layers: List[str]) -> Dict[str, np.ndarray]:
    out = {}
    for n in layers:
        key = blob_name(n, MASK)
        out[n] = (params[key].blobs[0] != 0) if key in params else np.ones(params[n].blobs[0].shape, bool)
    return out


def with_masks(params: Params, masks: Mapping[str, np.ndarray]) -> Params:
    """A copy of ``params`` with weights zeroed off-mask and ``L_mask`` blobs added."""
    out = type(params)(params)
    for n, m in masks.items():
        lp = params[n]
        w = np.where(m, lp.blobs[0], np.float32(0)).astype(np.float32)
        out[n] = LayerParams(lp.type, [w] + list(lp.blobs[1:]))
        out[blob_name(n, MASK)] = LayerParams("Parameter", [m.astype(np.float32)])
    return out


def layer_rows(params: Params, layers: List[str], paper: Mapping[str, float]) -> List[list]:
    rows = []
    tot_w = tot_nz = 0
    for n in layers:
        w = params[n].blobs[0]
        nz = int(np.count_nonzero(w))
        rows.append([n, w.size, nz, pct(nz / w.size), pct(paper.get(n)) if n in paper else None])
        tot_w += w.size
        tot_nz += nz
    rows.append(["total", tot_w, tot_nz, pct(tot_nz / tot_w), pct(paper["total"]) if "total" in paper else None])
    return rows


class _RoundContext(NamedTuple):
    base: object
    shapes: Dict[str, tuple]
    layers: List[str]
    n_orig: Dict[str, int]
    solver0: object
    test_iter: int
    cfg: PruneConfig
    progress: bool
    verbose: bool


def _round(c: _RoundContext, r: int, current: str, masks: Dict[str, np.ndarray], schedule, targets,
           rdir: str) -> Tuple[dict, str]:
    """Round ``r``: prune ``current`` further (``masks`` updated in place), retrain; its metrics and model.
    A round whose retrained model exists is read back instead."""
    cfg = c.cfg
    done = os.path.join(rdir, "retrained.caffemodel")
    rmeta = os.path.join(rdir, "metrics.json")
    if os.path.isfile(done) and os.path.isfile(rmeta):
        with open(rmeta) as f:
            rm = json.load(f)
        if c.progress:
            print("  round %d/%d: done before (%s kept), skipping" % (r, cfg.rounds, pct(rm["density"])))
        return rm, done
    params = load_params(current)
    for n in c.layers:
        w = params[n].blobs[0]
        if schedule is not None:
            masks[n] = pruning.density_mask(w, schedule[n][r - 1], masks[n])
        else:
            masks[n] = pruning.threshold_mask(w, targets[n], masks[n])
    os.makedirs(rdir, exist_ok=True)
    pruned_path = os.path.join(rdir, "pruned.caffemodel")
    save_params(with_masks(params, masks), pruned_path)
    net = rewrite.add_blobs(c.base, c.shapes, [MASK])
    kept = {n: float(masks[n].sum()) / c.n_orig[n] for n in c.layers}
    dropout = rewrite.adjust_dropout(net, kept)
    tv = os.path.join(rdir, "train_val.prototxt")
    save_net_proto(net, tv)
    before = solving.evaluate(tv, pruned_path, c.test_iter, c.verbose)
    density = sum(float(masks[n].sum()) for n in c.layers) / sum(c.n_orig.values())
    if c.progress:
        print("  round %d/%d: %s of weights kept, val accuracy %.2f%% before retraining"
              % (r, cfg.rounds, pct(density, 2), 100 * solving.accuracy_of(before)))
    sp = rewrite.retrain_solver(c.solver0, cfg.lr_factor)
    hist = retrain(tv, sp, pruned_path, os.path.join(rdir, "retrain"), cfg.iters_per_round, c.test_iter, done,
                   desc="prune round %d" % r, snapshot_every=cfg.snapshot_every, progress=c.progress,
                   verbose=c.verbose)
    after = hist[-1]
    if c.progress:
        print("  round %d/%d: val accuracy %.2f%% after %d retraining iterations"
              % (r, cfg.rounds, 100 * solving.accuracy_of(after), cfg.iters_per_round))
    rm = {"round": r, "density": density, "layer_density": kept, "dropout": dropout,
          "accuracy_before_retrain": solving.accuracy_of(before), "accuracy": solving.accuracy_of(after),
          "history": hist}
    atomic_write(rmeta, json.dumps(rm, indent=2).encode())
    return rm, done


def run_pruning(net, ref_model: str, info, out_dir: str, cfg: PruneConfig,
                layers: Optional[List[str]] = None, progress: bool = True, verbose: bool = False) -> dict:
    """``net``: a registry name (read on ``info``) or a ``nets.NetSource`` (any net)."""
    src = nets.source(net, info)
    info = src.info
    if cfg.rounds < 1:
        raise InputError("rounds must be >= 1, got %d" % cfg.rounds)
    os.makedirs(out_dir, exist_ok=True)
    base = src.train_val
    rewrite.check_unshared(base, src.name)
    params = load_params(ref_model)
    solving.check_matches(base, params, ref_model)
    layers = rewrite.select_layers(base, layers)
    if cfg.densities is None and cfg.qualities is None:
        raise InputError("give target densities or qualities")
    targets = cfg.densities if cfg.densities is not None else cfg.qualities
    unknown = sorted(set(targets) - set(layers))
    if unknown:
        raise InputError("no prunable layer named %s (prunable: %s)" % (", ".join(unknown), ", ".join(layers)))
    for n, v in targets.items():
        pruning.validate_density(v) if cfg.densities is not None else pruning.validate_quality(v)
    layers = [n for n in layers if n in targets]
    shapes = {n: params[n].blobs[0].shape for n in layers}
    test_iter = solving.test_iters_for(base, info.split("val")[1])
    base_path = os.path.join(out_dir, "base_train_val.prototxt")
    save_net_proto(base, base_path)
    ref_metrics = solving.evaluate(base_path, ref_model, test_iter, verbose)
    if progress:
        print("  reference val accuracy %.2f%%" % (100 * solving.accuracy_of(ref_metrics)))
    solver0 = src.solver_for(base_path, os.path.join(out_dir, "snap"))

    masks = masks_of(params, layers)
    n_orig = {n: params[n].blobs[0].size for n in layers}
    rounds = []
    schedule = None
    if cfg.densities is not None:
        schedule = {n: pruning.iterative_schedule(targets[n], cfg.rounds) for n in layers}
        for n, steps in (cfg.round_densities or {}).items():
            if n in schedule:
                if len(steps) != cfg.rounds:
                    raise InputError("layer %s: %d round densities for %d rounds" % (n, len(steps), cfg.rounds))
                schedule[n] = list(steps)
    current = ref_model
    ctx = _RoundContext(base, shapes, layers, n_orig, solver0, test_iter, cfg, progress, verbose)
    for r in range(1, cfg.rounds + 1):
        rm, current = _round(ctx, r, current, masks, schedule, targets, os.path.join(out_dir, "round%d" % r))
        rounds.append(rm)

    final = load_params(current)
    final_model = os.path.join(out_dir, "pruned.caffemodel")
    save_params(final, final_model)
    final_tv = os.path.join(out_dir, "train_val.prototxt")
    net = rewrite.add_blobs(base, shapes, [MASK])
    rewrite.adjust_dropout(net, rounds[-1]["layer_density"])
    save_net_proto(net, final_tv)
    paper = dict(pruning.PAPER_DENSITY.get(src.name, {})) if src.paper else {}
    if src.paper and src.name in pruning.PAPER_TOTAL_DENSITY:
        paper["total"] = pruning.PAPER_TOTAL_DENSITY[src.name]
    rows = layer_rows(final, layers, paper)
    metrics = {
        "net": src.name, "dataset": info.name, "reference_caffemodel": ref_model,
        "reference_accuracy": solving.accuracy_of(ref_metrics),
        "accuracy": rounds[-1]["accuracy"], "density": rounds[-1]["density"],
        "config": cfg._asdict(), "rounds": rounds, "caffemodel": final_model, "prototxt": final_tv,
        "layers": {r[0]: {"weights": r[1], "nonzero": r[2]} for r in rows},
    }
    atomic_write(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2).encode())
    head = ["layer", "weights", "nonzero", "density", "paper"]
    metrics["table"] = text_table(head, rows) if src.paper else text_table(head[:-1], [r[:-1] for r in rows])
    return metrics


# ---------------------------------------------------------------- the pipeline's stage

def stage_inputs(r: Run) -> dict:
    sch = r.schedule
    return {"densities": sch.densities, "rounds": sch.rounds, "prune_iters": sch.iters_per_round,
            "lr_factor": r.lr_factor, "snapshot_every": r.snapshot_every}


def run_stage(r: Run) -> dict:
    sch = r.schedule
    if not sch.densities:
        raise InputError("%s prunes no layer (its densities match none of %s)"
                         % (r.schedule_source, ", ".join(r.src.layer_types())))
    cfg = PruneConfig(densities=sch.final_densities(), rounds=sch.rounds, iters_per_round=sch.iters_per_round,
                      lr_factor=r.lr_factor, snapshot_every=r.snapshot_every, round_densities=sch.densities)
    m = run_pruning(r.src, r.out("reference")["caffemodel"], r.info, r.path("prune"), cfg, progress=r.progress)
    print(indent(m["table"]))
    written = load_solver_proto(r.path("prune", "round1", "retrain", "solver.prototxt"))
    return {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "density": m["density"],
            "layers": m["layers"], "config": m["config"], "solver_changes": nets.solver_changes(r.src.solver, written)}
