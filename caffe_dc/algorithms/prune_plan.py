"""A closed-loop prune schedule: each round's measured accuracy re-plans the rounds left.

The open-loop schedule fixes every round's densities in advance. Here the
path is planned one round at a time (NetAdapt's measure-then-step loop:
Yang et al., ECCV 2018) towards fixed per-layer targets, the budget, and
the step follows what retraining actually recovered.

The path: all layers move together along one *progress* p in [0, 1], layer
n keeping ``target_n ** p`` of its weights (p = r / rounds is exactly the
open loop's geometric plan, ``pruning.iterative_schedule``). The plan
allows a drop of ``max_drop_pp * p`` percentage points of validation
accuracy after retraining, against the reference's: a share of the budget
in proportion to the progress made. After a round that reached p with a
drop D (the drop the caller judges by: the prune stage gives the upper bound
of the drop's paired interval on the validation split, ``stages.prune.judged_drop``):

* D <= max_drop_pp: the round *holds*; the next step is the last one times
  the slack left, (max_drop_pp - D) / (max_drop_pp / 2), clamped to
  [SHRINK, GROW]: twice as large with no drop, the same at half the budget,
  half as large at the budget. The slack is measured against the whole
  budget, not against the planned share ``max_drop_pp * p``: a validation
  split of a few thousand images reads accuracy to about half a point, so a
  comparison with a small share would shrink every step on noise alone.
  Drops are usually small early and steep late, so this takes big steps
  first and small ones near the target, the shape that Distiller's automated
  gradual pruning (AGP, Zhu & Gupta 2017) fixes in advance with a cubic,
  here found by measurement. A step is never so small that the rounds left
  under the cap could not reach the targets at it.
* D > max_drop_pp: the round does not hold; the next round starts again
  from the last round that held with half the step (pruned weights never
  come back, so a failed round is discarded, not built on).

The first step is 1 / rounds of the schedule, no step is smaller than
``MIN_STEP_SHARE`` of it, and no step overshoots p = 1, where the densities
are the targets exactly. The loop ends when a round at p = 1 holds, when
``max_rounds`` rounds have run, or when a round at the smallest step fails
(retrying it would retrain the same start to the same masks). The result is
the last round that held: the targets, or the last densities that held
when the loop stopped short.

**Past the targets** (``Settings.past_targets``, what ``--max-drop`` sets):
the targets are only a first waypoint and a direction, chosen from curves
measured without retraining, which overstate what a layer loses once the
net has retrained. The loop then goes on past p = 1 (layer n keeps
``target_n ** p``, sparser as p grows), by the same step rule with steps
no larger than the first (the curves say nothing of what lies past the
targets), and ends
only when a round at the smallest step fails or at the cap: the highest
rate whose judged validation drop after retraining stays within
``max_drop_pp``, as far as the rounds can find it. A search keeps the last
round that held, so with point drops it would stop where the noise of the
validation split happened to read low; judged by a bound, it does not.

Everything is a pure function of the targets, the settings and the
judged drops so far, so a resumed run that reads the drops back from its
rounds' metrics makes the same decisions.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

from caffe_dc.base.tables import markdown_table

GROW = 2.0            # largest factor a step grows by after a round with slack
SHRINK = 0.5          # smallest factor it shrinks by (a failed round's factor)
MIN_STEP_SHARE = 0.25  # the smallest step, as a share of the first (1 / rounds)
EPS = 1e-12


class Settings(NamedTuple):
    max_drop_pp: float   # allowed drop of validation accuracy after retraining, percentage points, > 0
    max_rounds: int      # cap on the rounds run, >= the schedule's rounds
    past_targets: bool = False   # go on past the targets while rounds hold (the largest rate within the drop)


class Step(NamedTuple):
    """The next round to run."""
    round: int                  # 1-based
    start_round: int            # the held round whose model it prunes further (0: the reference)
    start_progress: float
    progress: float             # where it goes (1.0: the targets)
    step: float
    densities: Dict[str, float]
    planned_drop_pp: float
    rounds_left: int            # this one included, at the current step, within the cap


class Plan(NamedTuple):
    """Where the loop stands after the rounds measured so far."""
    next: Optional[Step]        # None: the loop has ended
    held_round: int             # the last round that held (0: none, the reference)
    held_progress: float
    stopped: Optional[str]      # why it ended: 'target', 'cap' or 'min_step'; None while running
    tried: List[dict]           # per measured round: round, start_round, progress, step, planned_drop_pp, held


def densities_at(targets: Mapping[str, float], progress: float) -> Dict[str, float]:
    """Each layer's kept share at ``progress`` (exactly its target at 1.0)."""
    return {n: (float(t) if progress == 1.0 else float(t) ** progress) for n, t in targets.items()}


def planned_drop(settings: Settings, progress: float) -> float:
    return settings.max_drop_pp * min(progress, 1.0)


def _advance(p: float, step: float) -> float:
    """Where a step from ``p`` lands: the targets exactly when it reaches them from below."""
    return 1.0 if p < 1.0 - EPS and p + step >= 1.0 - EPS else p + step


def _limit(step: float, held_p: float, first: float, settings: Settings) -> float:
    """Below the targets no step overshoots them; past them (if allowed) no step exceeds the first, since
    the curves that chose the targets say nothing of what lies beyond."""
    if held_p < 1.0 - EPS:
        return min(step, 1.0 - held_p)
    return min(step, first) if settings.past_targets else step


def plan(targets: Mapping[str, float], rounds: int, settings: Settings, drops: Sequence[float]) -> Plan:
    """Replay the loop over the judged ``drops`` (percentage points after retraining, round 1 first)
    and say what comes next. ``rounds``: the schedule's, which sets the first step."""
    first = 1.0 / rounds
    smallest = first * MIN_STEP_SHARE
    held_p, held_r, step, stopped, tried = 0.0, 0, first, None, []
    for r, d in enumerate(drops, 1):
        step = _limit(step, held_p, first, settings)
        p = _advance(held_p, step)
        want = planned_drop(settings, p)
        held = d <= settings.max_drop_pp
        tried.append({"round": r, "start_round": held_r, "progress": p, "step": step, "planned_drop_pp": want,
                      "held": held})
        if held:
            held_p, held_r = p, r
            factor = min(GROW, max(SHRINK, (settings.max_drop_pp - d) / (settings.max_drop_pp / 2.0)))
            # a step that the cap could not reach the targets at is raised, unless the targets are a waypoint
            reach = 0.0 if settings.past_targets else (1.0 - held_p) / max(1, settings.max_rounds - r)
            step = max(smallest, step * factor, reach)
        else:
            if step <= smallest + EPS:
                stopped = "min_step"
            step = max(smallest, step * SHRINK)
    if stopped is None and held_p >= 1.0 and not settings.past_targets:
        stopped = "target"
    if stopped is None and len(drops) >= settings.max_rounds:
        stopped = "cap"
    if stopped is not None:
        return Plan(None, held_r, held_p, stopped, tried)
    step = _limit(step, held_p, first, settings)
    p = _advance(held_p, step)
    left = settings.max_rounds - len(drops)
    if held_p < 1.0:
        left = min(left, int(math.ceil((1.0 - held_p) / step - EPS)))
    nxt = Step(len(drops) + 1, held_r, held_p, p, step, densities_at(targets, p), planned_drop(settings, p), left)
    return Plan(nxt, held_r, held_p, None, tried)


def rounds_table(rounds: Sequence[Mapping]) -> str:
    """The prune stage's ``rounds`` record as Markdown: planned against measured, round by round."""
    head = ["round", "from round", "planned density", "density", "planned drop (pp)", "measured drop (pp)",
            "drop bound (pp)", "val accuracy", "held"]
    rows = [[r["round"], r["start_round"], "%.2f%%" % (100 * r["planned_density"]), "%.2f%%" % (100 * r["density"]),
             "%.2f" % r["planned_drop_pp"], "%.2f" % r["measured_drop_pp"], "%.2f" % r["drop_bound_pp"],
             "%.2f%%" % (100 * r["accuracy"]), "yes" if r["held"] else "no"] for r in rounds]
    return markdown_table(head, rows)
