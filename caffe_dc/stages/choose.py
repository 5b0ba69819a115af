"""Choosing densities and a prune schedule from sensitivity curves and a budget.

The curves (``stages.sensitivity``) say how much validation accuracy each
layer loses when pruned alone; a budget (``--max-drop`` or
``--target-rate``) turns them into final densities, and ``plan_rounds``
into the densities after each prune -> retrain round. ``caffe-dc choose``
writes the result as a schedule file.
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, NamedTuple, Optional

from caffe_dc.algorithms import sensitivity as sens
from caffe_dc.algorithms.schedule import Schedule, from_dict
from caffe_dc.base.errors import InputError
from caffe_dc.base.tables import pct, text_table


class Budget(NamedTuple):
    """What to aim for: the largest drop a layer may cost when pruned alone, or an estimated P+Q rate."""
    max_drop_pp: Optional[float] = None
    target_rate: Optional[float] = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self._asdict().items() if v is not None}


class Recipe(NamedTuple):
    """How the chosen densities are reached and what the schedule records besides them."""
    round_drop_pp: float = 1.0
    min_rounds: int = 2
    max_rounds: int = 10
    iters: int = 3000
    finetune_iters: int = 3000
    lr_factor: float = 0.1
    index_bits: int = 5
    reference_iters: Optional[int] = None
    snapshot_every: Optional[int] = None


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
           where: str = "sensitivity.json", curves=None) -> Choice:
    """A schedule from a sensitivity document (``sensitivity.json``) and a budget; ``curves``: the
    document's ``read_curves`` when the caller has read them already."""
    base, curves = curves or read_curves(doc, where)
    layer_bits = sens.default_bits(curves)
    layer_bits.update(bits or {})
    if budget.max_drop_pp is not None:
        final = sens.choose_max_drop(base, curves, budget.max_drop_pp / 100.0)
    else:
        final = sens.choose_target_rate(base, curves, budget.target_rate, layer_bits, recipe.index_bits)
    plan = sens.plan_rounds(base, curves, final, recipe.round_drop_pp / 100.0, recipe.min_rounds, recipe.max_rounds)
    rate = sens.estimated_rate(curves, final, layer_bits, recipe.index_bits)
    dens = {}
    for n, ds in plan.densities.items():
        if final[n] < 1.0:
            r = [max(round(d, 4), 1e-4) for d in ds]
            dens[n] = [min(r[:i + 1]) for i in range(len(r))]
    total = sum(c.weights for c in curves)
    kept = sum(c.weights * final[c.name] for c in curves)
    src = {"sensitivity": os.path.abspath(where), "data": doc.get("lmdb"), "split": doc.get("split"),
           "images": doc.get("images"), "budget": budget.as_dict(), "round_drop_pp": recipe.round_drop_pp,
           "estimated_rate_pq": round(rate, 2), "density": round(kept / total, 5),
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
