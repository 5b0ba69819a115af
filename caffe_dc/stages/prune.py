"""Stage 1 on real Caffe: iterative prune -> retrain with mask blobs and hooks.

Each round picks masks on the current weights (``pruning.py``), writes a
caffemodel carrying ``L_mask`` blobs, rewrites the net to hold them
(``rewrite.py``), and retrains with the mask hooks (``retraining.py``).
A round whose retrained model exists is not redone, so a rerun after a kill
picks up where it stopped.

With ``PruneConfig.closed_loop`` (a schedule's ``closed_loop`` key) the
rounds are planned one at a time by ``algorithms.prune_plan`` from the
validation drops measured so far; each round's plan and measurement are in
its ``round<r>/metrics.json``, and the plan is replayed from those, so a
resumed run makes the same decisions. The stage's output then carries the
rounds, planned against measured.

A round's drop is measured against an unbiased figure of the reference
(``Baseline``: its last validation evaluation, not the best-of one it was
kept for, which reads high by about the split's noise), and the loop judges
it by the upper bound of its paired interval on the validation split, so a
search does not stop where the noise happened to read low.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from caffe_dc.pycaffe import calibration, layerwise, nets
from caffe_dc.algorithms import prune_plan, prune_rules, pruning, stats
from caffe_dc.pycaffe import rewrite
from caffe_dc.pycaffe import solving
from caffe_dc.base import defaults
from caffe_dc.base.blobs import MASK, blob_name
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe.caffemodel import load_params, load_solver_proto, save_net_proto, save_params
from caffe_dc.stages.run import Run, StageRecord, indent
from caffe_dc.base.errors import InputError, InternalError
from caffe_dc.pycaffe.retraining import retrain
from caffe_dc.base.tables import pct, text_table


class PruneConfig(NamedTuple):
    densities: Optional[Dict[str, float]] = None   # per-layer final density (kept fraction)
    qualities: Optional[Dict[str, float]] = None   # per-layer quality: threshold = q * std
    rounds: int = 3
    iters_per_round: int = 4000
    lr_factor: float = defaults.LR_FACTOR
    snapshot_every: int = 1000
    # per-layer density after each round (a schedule file's); default: geometric steps to ``densities``
    round_densities: Optional[Dict[str, List[float]]] = None
    # {"max_drop_pp", "max_rounds"}: re-plan the rounds from measured accuracy (``prune_plan``); needs densities
    closed_loop: Optional[Dict[str, float]] = None
    rule: str = prune_rules.DEFAULT                 # which weights a density keeps (``prune_rules``)
    # {"images": N}: each round's pruned net refitted to the reference's layer outputs before it retrains
    reconstruct: Optional[Dict[str, int]] = None

    def as_dict(self) -> dict:
        """The config as recorded; ``closed_loop``, ``rule`` and ``reconstruct`` only when not the default, so a
        record is as it always was."""
        out = self._asdict()
        for k in ("closed_loop", "reconstruct"):
            if out[k] is None:
                del out[k]
        if out["rule"] == prune_rules.DEFAULT:
            del out["rule"]
        return out


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


class Baseline(NamedTuple):
    """The validation accuracy a closed loop measures its drops against, and what it is (recorded)."""
    accuracy: float
    what: str


def baseline(reference) -> Baseline:
    """The reference stage's (its record's) last validation evaluation (of its annealing, when it annealed). An
    early-stopped reference is the best of its evaluations, so its own figure is a maximum over noisy readings and
    reads high by about the split's noise; the last evaluation was not chosen on it. A fixed-length or given
    reference was not chosen on validation, so its own figure is that evaluation."""
    evaluations = reference.anneal.get("evaluations") if reference.anneal else reference.evaluations
    if evaluations:
        it, acc = evaluations[-1]
        return Baseline(float(acc), "the reference's last validation evaluation (%s, iteration %d)"
                        % ("annealing" if reference.anneal else "training", it))
    return Baseline(float(reference.accuracy), "the reference's validation accuracy (%s: not chosen on validation)"
                    % reference.rule)


BATCH = 100   # images a reconstruction's forward pass runs at once


class Reconstruction:
    """A round's pruned net refitted, layer by layer in net order, to reproduce the reference's layer outputs
    (``layerwise.reconstruct``) on a seeded sample of the training split, read and run through the net
    once, when a round first needs it (a resumed run whose rounds are done never does)."""

    SEED = 0   # the sample's: the same images every round, and in a run resumed after a kill

    def __init__(self, base, train_data: str, ref_params: Params, layers: List[str], images: int, work_dir: str):
        self.base, self.train_data, self.ref, self.names, self.n, self.work_dir = \
            base, train_data, ref_params, layers, images, work_dir
        self.images: Optional[layerwise.Images] = None
        self.layers: List[layerwise.Layer] = []

    def _load(self) -> None:
        preprocess = calibration.preprocess_from(self.base, calibration.Preprocess(), ())
        calib = calibration.load(self.train_data, self.base, None, preprocess, self.n, self.SEED)
        shape = (min(BATCH, calib.images.shape[0]),) + tuple(calib.images.shape[1:])
        os.makedirs(self.work_dir, exist_ok=True)
        self.images = layerwise.Images(calibration.forward_for(self.base, shape, self.ref, self.work_dir), calib.images)
        self.layers = [l for l in layerwise.layers_of(self.base, self.ref) if l.name in self.names]

    def __call__(self, start: Params, masks: Mapping[str, np.ndarray]) -> Tuple[Params, dict]:
        """(``start`` refitted, its record: the images read and each layer's share of channels refitted)."""
        if self.images is None:
            self._load()
        out, shares = layerwise.reconstruct(self.images, self.layers, self.ref, start, masks)
        return out, {"images": int(self.images.x.shape[0]), "refit_share": shares}


class _RoundContext(NamedTuple):
    base: object
    shapes: Dict[str, tuple]
    layers: List[str]
    n_orig: Dict[str, int]
    solver0: object
    test_iter: int
    n_val: int
    cfg: PruneConfig
    progress: bool
    verbose: bool
    reconstruction: Optional[Reconstruction] = None


def _round(c: _RoundContext, r: int, current: str, masks: Dict[str, np.ndarray], want: Optional[Dict[str, float]],
           rdir: str, of: str, plan: Optional[dict] = None,
           ref_correct: Optional[Callable[[], np.ndarray]] = None) -> Tuple[dict, str]:
    """Round ``r``: prune ``current`` further (``masks`` updated in place) to the densities ``want`` (None: the
    config's qualities), retrain; its metrics and model. A round whose retrained model exists is read back
    instead. ``of``: the round count as printed; ``plan``: the closed loop's plan of this round, recorded with
    the drop measured against its ``reference_accuracy`` (``judged_drop``; ``ref_correct()``: the reference's
    per-image validation correctness)."""
    cfg = c.cfg
    done = os.path.join(rdir, "retrained.caffemodel")
    rmeta = os.path.join(rdir, "metrics.json")
    if os.path.isfile(done) and os.path.isfile(rmeta):
        with open(rmeta) as f:
            rm = json.load(f)
        if c.progress:
            print("  round %d%s: done before (%s kept), skipping" % (r, of, pct(rm["density"])))
        return rm, done
    params = load_params(current)
    for n in c.layers:
        w = params[n].blobs[0]
        if want is not None:
            masks[n] = prune_rules.rule(cfg.rule).mask(w, want[n], masks[n])
        else:
            masks[n] = pruning.threshold_mask(w, cfg.qualities[n], masks[n])
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
    recon = None
    if c.reconstruction is not None:
        # the round's start, refitted: what retraining starts from and what "before retraining" measures
        refitted, recon = c.reconstruction(params, masks)
        recon["accuracy_before"] = solving.accuracy_of(before)
        save_params(with_masks(refitted, masks), pruned_path)
        before = solving.evaluate(tv, pruned_path, c.test_iter, c.verbose)
        if c.progress:
            print("  round %d%s: reconstructed on %d training images: val accuracy %.2f%% -> %.2f%%"
                  % (r, of, recon["images"], 100 * recon["accuracy_before"], 100 * solving.accuracy_of(before)))
    if c.progress:
        print("  round %d%s: %s of weights kept, val accuracy %.2f%% before retraining"
              % (r, of, pct(density, 2), 100 * solving.accuracy_of(before)))
    sp = rewrite.retrain_solver(c.solver0, cfg.lr_factor)
    hist = retrain(tv, sp, pruned_path, os.path.join(rdir, "retrain"), cfg.iters_per_round, c.test_iter, done,
                   desc="prune round %d" % r, snapshot_every=cfg.snapshot_every, progress=c.progress,
                   verbose=c.verbose)
    after = hist[-1]
    if c.progress:
        print("  round %d%s: val accuracy %.2f%% after %d retraining iterations"
              % (r, of, 100 * solving.accuracy_of(after), cfg.iters_per_round))
    rm = {"round": r, "density": density, "layer_density": kept, "dropout": dropout,
          "accuracy_before_retrain": solving.accuracy_of(before), "accuracy": solving.accuracy_of(after),
          "history": hist}
    if recon is not None:
        rm["reconstruction"] = recon
    if plan is not None:
        scored = solving.score_exact(tv, done, c.n_val)["per_image"]
        rm.update(plan, **judged_drop(plan["reference_accuracy"], ref_correct(), scored,
                                      cfg.closed_loop["max_drop_pp"]))
    atomic_write(rmeta, json.dumps(rm, indent=2).encode())
    return rm, done


def judged_drop(baseline_accuracy: float, ref_correct, round_correct, max_drop_pp: float) -> dict:
    """A round's drop in points against ``baseline_accuracy`` (``measured_drop_pp``), and the bound the closed loop
    judges it by (``drop_bound_pp``): that drop plus the lower half-width of the paired interval of the round's
    per-image validation correctness against the reference model's (its verdict recorded at the loop's budget as
    margin). The point drop reads low about as often as high; stopping at the last round whose point held would
    stop where the noise happened to read low."""
    cmp = stats.paired(ref_correct, round_correct, margin=max_drop_pp / 100.0)
    point = 100.0 * (float(baseline_accuracy) - cmp["b_correct"] / cmp["n"])
    return {"measured_drop_pp": point, "drop_bound_pp": point + 100.0 * (cmp["diff"] - cmp["diff_low"]),
            "paired_vs_reference": {k: cmp[k] for k in ("n", "only_a", "only_b", "diff", "diff_low", "diff_high",
                                                         "margin", "verdict")}}


def run_pruning(net, ref_model: str, info, out_dir: str, cfg: PruneConfig,
                layers: Optional[List[str]] = None, progress: bool = True, verbose: bool = False,
                ref_baseline: Optional[Baseline] = None) -> dict:
    """``net``: a registry name (read on ``info``) or a ``nets.NetSource`` (any net); ``ref_baseline``: what a
    closed loop measures its drops against (default: the reference model's own validation accuracy)."""
    src = nets.source(net, info)
    info = src.info
    if cfg.rounds < 1:
        raise InputError("rounds must be >= 1, got %d" % cfg.rounds)
    prune_rules.rule(cfg.rule)   # a rule that does not exist fails before anything is written
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
    n_val = info.split("val")[1]
    test_iter = solving.test_iters_for(base, n_val)
    base_path = os.path.join(out_dir, "base_train_val.prototxt")
    save_net_proto(base, base_path)
    ref_metrics = solving.evaluate(base_path, ref_model, test_iter, verbose)
    if progress:
        print("  reference val accuracy %.2f%%" % (100 * solving.accuracy_of(ref_metrics)))
    solver0 = src.solver_for(base_path, os.path.join(out_dir, "snap"))

    n_orig = {n: params[n].blobs[0].size for n in layers}
    recon = None
    if cfg.reconstruct is not None:
        recon = Reconstruction(base, info.split("train")[0], params, layers, int(cfg.reconstruct["images"]),
                               os.path.join(out_dir, "reconstruct"))
    ctx = _RoundContext(base, shapes, layers, n_orig, solver0, test_iter, n_val, cfg, progress, verbose, recon)
    ref_acc = solving.accuracy_of(ref_metrics)
    if cfg.closed_loop is not None:
        figure = ref_baseline or Baseline(ref_acc, "the reference model's validation accuracy")
        rounds, current, loop = _closed_loop(ctx, ref_model, base_path, figure, targets, out_dir)
        loop.update(reference_figure=figure._asdict(), reference_model_accuracy=ref_acc)
    else:
        (rounds, current), loop = _open_loop(ctx, ref_model, params, targets, out_dir), None
    last = rounds[-1] if loop is None else _held(rounds, loop, layers, ref_acc)

    final = load_params(current)
    if current == ref_model:   # nothing held: the reference, with all-ones masks so later stages read it alike
        final = with_masks(final, masks_of(final, layers))
    final_model = os.path.join(out_dir, "pruned.caffemodel")
    save_params(final, final_model)
    final_tv = os.path.join(out_dir, "train_val.prototxt")
    net = rewrite.add_blobs(base, shapes, [MASK])
    rewrite.adjust_dropout(net, last["layer_density"])
    save_net_proto(net, final_tv)
    paper = dict(pruning.PAPER_DENSITY.get(src.name, {})) if src.paper else {}
    if src.paper and src.name in pruning.PAPER_TOTAL_DENSITY:
        paper["total"] = pruning.PAPER_TOTAL_DENSITY[src.name]
    rows = layer_rows(final, layers, paper)
    metrics = {
        "net": src.name, "dataset": info.name, "reference_caffemodel": ref_model,
        "reference_accuracy": ref_acc,
        "accuracy": last["accuracy"], "density": last["density"],
        "config": cfg.as_dict(), "rounds": rounds, "caffemodel": final_model, "prototxt": final_tv,
        "layers": {r[0]: {"weights": r[1], "nonzero": r[2]} for r in rows},
    }
    if loop is not None:
        metrics["closed_loop"] = loop
    atomic_write(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2).encode())
    head = ["layer", "weights", "nonzero", "density", "paper"]
    metrics["table"] = text_table(head, rows) if src.paper else text_table(head[:-1], [r[:-1] for r in rows])
    return metrics


def _open_loop(c: _RoundContext, ref_model: str, params: Params, targets, out_dir: str) -> Tuple[List[dict], str]:
    """The rounds planned in advance: the config's round densities, else geometric steps (or qualities)."""
    cfg, layers = c.cfg, c.layers
    masks = masks_of(params, layers)
    schedule = None
    if cfg.densities is not None:
        schedule = {n: pruning.iterative_schedule(targets[n], cfg.rounds) for n in layers}
        for n, steps in (cfg.round_densities or {}).items():
            if n in schedule:
                if len(steps) != cfg.rounds:
                    raise InputError("layer %s: %d round densities for %d rounds" % (n, len(steps), cfg.rounds))
                schedule[n] = list(steps)
    current, rounds = ref_model, []
    for r in range(1, cfg.rounds + 1):
        want = None if schedule is None else {n: schedule[n][r - 1] for n in layers}
        rm, current = _round(c, r, current, masks, want, os.path.join(out_dir, "round%d" % r),
                             "/%d" % cfg.rounds)
        rounds.append(rm)
    return rounds, current


def _closed_loop(c: _RoundContext, ref_model: str, ref_net: str, figure: Baseline, targets: Dict[str, float],
                 out_dir: str) -> Tuple[List[dict], str, dict]:
    """Rounds planned one at a time from the drops judged so far (``prune_plan``, ``judged_drop``); each starts
    from the last round that held. Returns the rounds run, the model of the last that held, and the loop's
    summary."""
    cfg = c.cfg
    if cfg.densities is None:
        raise InputError("a closed-loop schedule needs target densities, not qualities")
    settings = prune_plan.Settings(float(cfg.closed_loop["max_drop_pp"]), int(cfg.closed_loop["max_rounds"]),
                                   bool(cfg.closed_loop.get("past_targets", False)))
    models, rounds, ref_correct = {0: ref_model}, [], []

    def correct():   # the reference scored once, when a round first needs it (a resumed loop may not)
        if not ref_correct:
            ref_correct.append(solving.score_exact(ref_net, ref_model, c.n_val)["per_image"])
        return ref_correct[0]

    total = sum(c.n_orig.values())
    while True:
        pl = prune_plan.plan(targets, cfg.rounds, settings, [rm["drop_bound_pp"] for rm in rounds])
        st = pl.next
        if st is None:
            break
        start = models[st.start_round]
        planned = {"reference_accuracy": figure.accuracy, "start_round": st.start_round, "progress": st.progress,
                   "step": st.step, "planned_layer_density": st.densities,
                   "planned_density": sum(st.densities[n] * c.n_orig[n] for n in c.layers) / total,
                   "planned_drop_pp": st.planned_drop_pp}
        if c.progress:
            print("  closed loop: round %d from round %d, %.3f -> %.3f of the way, about %d round(s) left"
                  % (st.round, st.start_round, st.start_progress, st.progress, st.rounds_left))
        rdir = os.path.join(out_dir, "round%d" % st.round)
        rm, models[st.round] = _round(c, st.round, start, masks_of(load_params(start), c.layers), st.densities, rdir,
                                      " (closed loop, at most %d)" % settings.max_rounds, planned, correct)
        if rm.get("progress") != st.progress or rm.get("start_round") != st.start_round:
            raise InternalError("%s was planned differently from the replayed plan" % rdir)
        if c.progress:
            print("  closed loop: round %d drops %.2f pp against %s (%.2f%%); at most %.2f pp by its paired interval"
                  % (st.round, rm["measured_drop_pp"], figure.what, 100 * figure.accuracy, rm["drop_bound_pp"]))
        rounds.append(rm)
    for rm, t in zip(rounds, pl.tried):
        rm["held"] = t["held"]
    loop = dict(settings._asdict(), held_round=pl.held_round, progress=pl.held_progress, stopped=pl.stopped,
                reached_targets=pl.held_progress >= 1.0, rounds_run=len(rounds))
    if c.progress:
        print("  closed loop: stopped (%s) after %d round(s); keeping round %d, %s of the way to the targets"
              % (pl.stopped, len(rounds), pl.held_round, pct(pl.held_progress)))
    return rounds, models[pl.held_round], loop


def _held(rounds: List[dict], loop: dict, layers: List[str], ref_acc: float) -> dict:
    """The round the closed loop keeps (the reference's figures when none held)."""
    if loop["held_round"]:
        return rounds[loop["held_round"] - 1]
    return {"accuracy": ref_acc, "density": 1.0, "layer_density": {n: 1.0 for n in layers}}


def loop_rounds(rounds: List[dict]) -> List[dict]:
    """The closed loop's rounds, planned against measured (what the stage outputs and ``rounds_table`` reads)."""
    keys = ("round", "start_round", "planned_density", "density", "planned_drop_pp", "measured_drop_pp",
            "drop_bound_pp", "accuracy", "held")
    return [{k: rm[k] for k in keys} for rm in rounds]


# ---------------------------------------------------------------- the pipeline's stage

def stage_inputs(r: Run) -> dict:
    sch = r.schedule
    out = {"densities": sch.densities, "rounds": sch.rounds, "prune_iters": sch.iters_per_round,
           "lr_factor": r.lr_factor, "snapshot_every": r.snapshot_every}
    if sch.closed_loop is not None:   # absent otherwise, so an open-loop run's inputs read as they always did
        out["closed_loop"] = sch.closed_loop
    if sch.reconstruct is not None:   # likewise
        out["reconstruct"] = sch.reconstruct
    return out


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """The pruned model, its validation accuracy and density, per layer, the config, the solver as changed;
    a closed loop's summary and rounds (planned against measured) when it ran one."""
    caffemodel: str
    accuracy: float
    density: float
    layers: dict
    config: dict
    solver_changes: list
    closed_loop: Optional[dict] = None
    rounds: Optional[list] = None
    OPTIONAL = ("closed_loop", "rounds")


def run_stage(r: Run) -> Record:
    sch = r.schedule
    if not sch.densities:
        raise InputError("%s prunes no layer (its densities match none of %s)"
                         % (r.schedule_source, ", ".join(r.src.layer_types())))
    cfg = PruneConfig(densities=sch.final_densities(), rounds=sch.rounds, iters_per_round=sch.iters_per_round,
                      lr_factor=r.lr_factor, snapshot_every=r.snapshot_every, round_densities=sch.densities,
                      closed_loop=sch.closed_loop, reconstruct=sch.reconstruct)
    m = run_pruning(r.src, r.out("reference").caffemodel, r.info, r.folder(), cfg, progress=r.progress,
                    ref_baseline=baseline(r.out("reference")))
    print(indent(m["table"]))
    written = load_solver_proto(r.folder("round1", "retrain", "solver.prototxt"))
    out = {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "density": m["density"],
           "layers": m["layers"], "config": m["config"], "solver_changes": nets.solver_changes(r.src.solver, written)}
    if "closed_loop" in m:
        out.update(closed_loop=m["closed_loop"], rounds=loop_rounds(m["rounds"]))
    return Record(**out)
