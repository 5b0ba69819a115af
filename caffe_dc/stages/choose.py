"""Choosing densities and a prune schedule from sensitivity curves and a budget.

The curves (``stages.sensitivity``) say how much validation accuracy each
layer loses when pruned alone; a budget (``--max-drop`` or
``--target-rate``) turns them into final densities, and ``plan_rounds``
into the densities after each prune -> retrain round. ``caffe-dc choose``
writes the result as a schedule file.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Mapping, NamedTuple, Optional

from caffe_dc.algorithms import sensitivity as sens
from caffe_dc.algorithms.allocation import Allocation, allocate
from caffe_dc.algorithms.schedule import Schedule, from_dict
from caffe_dc.base import defaults
from caffe_dc.base.errors import InputError
from caffe_dc.base.tables import pct, text_table
from caffe_dc.stages.run import StageRecord


class Budget(NamedTuple):
    """What to aim for: the largest drop a layer may cost when pruned alone, or an estimated P+Q rate."""
    max_drop_pp: Optional[float] = None
    target_rate: Optional[float] = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self._asdict().items() if v is not None}


class Recipe(NamedTuple):
    """How the chosen densities are reached and what the schedule records besides them."""
    round_drop_pp: float = 1.0
    min_rounds: int = defaults.MIN_ROUNDS
    max_rounds: int = defaults.MAX_ROUNDS
    iters: int = 3000
    finetune_iters: int = 3000
    lr_factor: float = defaults.LR_FACTOR
    index_bits: int = defaults.INDEX_BITS
    reference_iters: Optional[int] = None
    snapshot_every: Optional[int] = None
    allocation: Allocation = Allocation.SHARED_DROP


class Choice(NamedTuple):
    schedule: Schedule
    final: Dict[str, float]            # per layer: the chosen final density
    plan: sens.Plan
    rate: float                        # estimated P+Q rate
    table: str                         # what was chosen, for the console


def read_curves(doc: Mapping, where: str = "sensitivity.json"):
    """(baseline accuracy, curves) of a sensitivity document; a one-line InputError naming it if malformed."""
    try:
        return sens.curves_from_json(doc)
    except InputError as e:
        raise InputError("%s: %s" % (where, e))


def choose(doc: Mapping, budget: Budget, recipe: Recipe = Recipe(), bits: Optional[Mapping[str, int]] = None,
           where: str = "sensitivity.json", curves=None,
           estimate: Optional[Callable[[Mapping[str, float]], float]] = None, net: Optional[str] = None) -> Choice:
    """A schedule from a sensitivity document (``sensitivity.json``) and a budget; ``curves``: the
    document's ``read_curves`` when the caller has read them already; ``estimate``: the rate a choice
    of final densities gives (default: the P+Q formula; ``file_rate`` encodes the candidate); ``net``:
    the paper's net this is, whose bit tables are then the default (``layer_policy.default_bits``)."""
    base, curves = curves or read_curves(doc, where)
    layer_bits = sens.default_bits(curves, net)
    layer_bits.update(bits or {})
    if budget.max_drop_pp is not None:
        final = sens.choose_max_drop(base, curves, budget.max_drop_pp / 100.0)
    else:
        final = allocate(recipe.allocation, base, curves, budget.target_rate, layer_bits, recipe.index_bits, estimate)
    plan = sens.plan_rounds(base, curves, final, recipe.round_drop_pp / 100.0, recipe.min_rounds, recipe.max_rounds)
    rate = estimate(final) if estimate else sens.estimated_rate(curves, final, layer_bits, recipe.index_bits)
    dens = {}
    for n, ds in plan.densities.items():
        if final[n] < 1.0:
            r = [max(round(d, 4), 1e-4) for d in ds]
            dens[n] = [min(r[:i + 1]) for i in range(len(r))]
    total = sum(c.weights for c in curves)
    kept = sum(c.weights * final[c.name] for c in curves)
    src = {"sensitivity": os.path.abspath(where), "data": doc.get("lmdb"), "split": doc.get("split"),
           "images": doc.get("images"), "budget": budget.as_dict(), "round_drop_pp": recipe.round_drop_pp,
           ("estimated_file_rate" if estimate else "estimated_rate_pq"): round(rate, 2),
           "density": round(kept / total, 5),
           "estimated_drop_pp": {n: round(100 * v, 3) for n, v in plan.final_drop.items()},
           "estimated_round_drop_pp": [round(100 * v, 3) for v in plan.round_drop]}
    sched = Schedule(plan.rounds, recipe.iters, recipe.finetune_iters, recipe.lr_factor, dens, layer_bits,
                     net=doc.get("net"), description="chosen by `caffe-dc choose` from %s" % os.path.basename(where),
                     source=src, snapshot_every=recipe.snapshot_every, reference_iters=recipe.reference_iters)
    from_dict(sched.to_dict(), {c.name: c.kind for c in curves}, where=where)   # what we write must load
    rows = [[c.name, c.kind, c.weights, pct(final[c.name], 2), "%.2f" % (100 * plan.final_drop[c.name]),
             layer_bits[c.name], " ".join(pct(d, 1) for d in plan.densities[c.name])] for c in curves]
    rows.append(["total", "", total, pct(kept / total, 2), "", "", ""])
    table = text_table(["layer", "kind", "weights", "density", "drop pp", "bits", "per round"], rows)
    return Choice(sched, final, plan, rate, table)


def file_rate(params, bits: Mapping[str, int]) -> Callable[[Mapping[str, float]], float]:
    """The rate a choice of final densities gives, as the encoder will write it: ``params`` (the dense
    reference) pruned by magnitude and k-means quantized post hoc, then encoded (index widths chosen per
    layer, Huffman, codebooks, biases, header): dense float32 bytes over file bytes."""
    from caffe_dc.codec import frontend

    def estimate(densities: Mapping[str, float]) -> float:
        q = frontend.post_hoc(params, None, density=densities, bits=bits)
        data, stats = frontend.encode_params(q, None, meta={})
        return stats.totals()["original_bits"] / 8.0 / len(data)
    return estimate


# ---------------------------------------------------------------- the pipeline's stage

SKIPPED = "the schedule gives densities; a budget (--target-rate / --max-drop) chooses them"


def wanted(r) -> bool:
    return bool(r.budget)


def _recipe(r) -> Recipe:
    b, d = r.budget, r.declared
    return Recipe(round_drop_pp=b.get("round_drop_pp", Recipe().round_drop_pp),
                  min_rounds=int(b.get("min_rounds", Recipe().min_rounds)),
                  max_rounds=int(b.get("max_rounds", Recipe().max_rounds)),
                  iters=d.iters_per_round, finetune_iters=d.finetune_iters, lr_factor=d.lr_factor,
                  reference_iters=d.reference_iters, snapshot_every=d.snapshot_every,
                  allocation=Allocation(b.get("allocation", Allocation.SHARED_DROP.value)))


def stage_inputs(r) -> dict:
    return {"budget": r.budget, "bits": r.declared.bits,
            "recipe": dict(_recipe(r)._asdict(), allocation=_recipe(r).allocation.value)}


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """What was chosen: the schedule's rounds, densities, bits and source (``Run.schedule_doc`` merges them
    into the declared schedule), the final densities and the rate estimated for them."""
    schedule: dict
    final: Dict[str, float]
    estimated_rate: float
    rounds: int
    estimate: str                      # "file" (encoded post hoc) or "pq" (the formula)


def run_stage(r) -> Record:
    """Final densities for the budget from the run's own sensitivity curves (a target rate is met as the
    encoder measures it), and the rounds to reach them: the schedule every later stage follows."""
    import json

    from caffe_dc.pycaffe.caffemodel import load_params
    from caffe_dc.stages.run import indent

    with open(r.out("sensitivity").sensitivity) as f:
        doc = json.load(f)
    curves = read_curves(doc, r.out("sensitivity").sensitivity)
    bits = dict(sens.default_bits(curves[1], r.src.name if r.src.paper else None), **(r.declared.bits or {}))
    estimate = None
    if r.budget.get("target_rate") is not None:
        estimate = file_rate(load_params(r.out("reference").caffemodel), bits)
    c = choose(doc, Budget(r.budget.get("max_drop_pp"), r.budget.get("target_rate")), _recipe(r), bits,
               r.out("sensitivity").sensitivity, curves, estimate)
    # only what was chosen: the rest of the schedule stays the declared one (``Run.schedule_doc``), so a
    # setting the choice does not read (a closed loop's drop, the iterations) takes effect when it changes
    chosen = {"rounds": c.schedule.rounds, "densities": c.schedule.densities, "bits": c.schedule.bits,
              "source": c.schedule.source}
    print(indent(c.table))
    print("  %d rounds; %s %.1fx" % (c.plan.rounds, "file rate (encoded post hoc)" if estimate else
                                      "estimated P+Q rate", c.rate))
    return Record(schedule=chosen, final=c.final, estimated_rate=c.rate, rounds=c.plan.rounds,
                  estimate="file" if estimate else "pq")
