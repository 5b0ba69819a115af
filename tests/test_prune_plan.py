"""The closed-loop prune plan (algorithms/prune_plan.py) and its schedule key: pure numpy, no Caffe."""
import pytest

from caffe_dc.algorithms import prune_plan as pp
from caffe_dc.algorithms import pruning
from caffe_dc.algorithms.schedule import from_dict
from caffe_dc.base.errors import InputError

TARGETS = {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}
S = pp.Settings(max_drop_pp=0.5, max_rounds=8)


def test_first_round_is_the_open_loops_geometric_step():
    p = pp.plan(TARGETS, 4, S, [])
    assert p.next.round == 1 and p.next.start_round == 0 and p.next.progress == 0.25
    assert p.next.densities == {n: pruning.iterative_schedule(t, 4)[0] for n, t in TARGETS.items()}
    assert p.next.planned_drop_pp == pytest.approx(0.125) and p.next.rounds_left == 4


def test_the_step_follows_the_slack_left_in_the_budget():
    half = pp.plan(TARGETS, 4, S, [0.25]).next        # half the 0.5 pp budget: the same step
    tight = pp.plan(TARGETS, 4, S, [0.375]).next      # three quarters of it: half the step
    slack = pp.plan(TARGETS, 4, S, [0.05]).next
    gained = pp.plan(TARGETS, 4, S, [-0.3]).next      # accuracy rose after retraining
    assert half.step == pytest.approx(0.25)
    assert tight.step == pytest.approx(0.125) and tight.start_round == 1
    assert slack.step == pytest.approx(0.45) and gained.step == pytest.approx(0.5)   # grown, at most x2
    assert tight.rounds_left > half.rounds_left > slack.rounds_left
    for n in TARGETS:   # smaller step: denser; larger: sparser
        assert tight.densities[n] > half.densities[n] > slack.densities[n]


def test_noise_above_the_planned_share_does_not_shrink_the_step():
    """0.2 pp is above the 0.125 pp share planned for a quarter of the way, but well inside the budget: a
    5000-image validation split reads accuracy to about half a point, so such a drop is not a reason to slow."""
    assert pp.plan(TARGETS, 4, S, [0.2]).next.step > 0.25


def test_the_step_never_leaves_the_targets_out_of_reach_of_the_cap():
    p = pp.plan(TARGETS, 10, pp.Settings(1.0, 12), [0.99])   # a step that would halve: 0.1 -> 0.05
    assert p.next.step == pytest.approx(0.9 / 11)


def test_a_round_over_budget_is_discarded_and_retried_smaller_from_the_last_that_held():
    p = pp.plan(TARGETS, 4, S, [0.1, 0.9])
    assert [t["held"] for t in p.tried] == [True, False]
    assert p.held_round == 1 and p.next.start_round == 1 and p.next.start_progress == 0.25
    assert p.next.step == pytest.approx(p.tried[1]["step"] / 2)


def test_the_last_step_lands_on_the_targets_exactly():
    p = pp.plan(TARGETS, 2, S, [0.0])    # slack: step 1.0, capped at what is left
    assert p.next.progress == 1.0 and p.next.densities == TARGETS and p.next.rounds_left == 1
    done = pp.plan(TARGETS, 2, S, [0.0, 0.4])
    assert done.next is None and done.stopped == "target" and done.held_round == 2 and done.held_progress == 1.0


def test_the_cap_stops_at_the_last_round_that_held():
    cap = pp.Settings(0.5, 3)
    p = pp.plan(TARGETS, 2, cap, [0.4, 0.45, 2.0])
    assert p.next is None and p.stopped == "cap"
    assert p.held_round == 2 and 0.5 < p.held_progress < 1.0
    # more rounds than the schedule's 2 when steps shrink, never past the cap
    running = pp.plan(TARGETS, 2, pp.Settings(0.5, 20), [0.4, 0.45])
    assert running.next.round == 3 and running.next.progress == 0.875 and running.next.rounds_left == 2
    assert pp.plan(TARGETS, 2, pp.Settings(0.5, 20), [0.4, 0.8]).next.rounds_left == 4
    assert pp.plan(TARGETS, 2, pp.Settings(0.5, 4), [0.4, 0.8]).next.rounds_left == 2


def test_failing_at_the_smallest_step_stops_instead_of_repeating_it():
    drops, p = [], pp.plan(TARGETS, 2, pp.Settings(0.5, 50), [])
    while p.next is not None:
        drops.append(5.0)                # every round over budget
        p = pp.plan(TARGETS, 2, pp.Settings(0.5, 50), drops)
    assert p.stopped == "min_step" and p.held_round == 0 and p.held_progress == 0.0
    assert p.tried[-1]["step"] == pytest.approx(0.5 * pp.MIN_STEP_SHARE) and len(drops) < 50


def test_every_plan_respects_targets_cap_and_is_deterministic():
    import random
    rng = random.Random(3)
    for _ in range(200):
        cap = rng.randint(2, 12)
        s = pp.Settings(rng.choice([0.2, 0.5, 1.0]), cap)
        drops, p = [], pp.plan(TARGETS, 2, s, [])
        while p.next is not None:
            for n, t in TARGETS.items():
                assert t <= p.next.densities[n] < 1.0
            assert p.next.round <= cap and 1 <= p.next.rounds_left <= cap - len(drops)
            drops.append(rng.uniform(-0.2, 1.5))
            p = pp.plan(TARGETS, 2, s, drops)
        assert len(drops) <= cap and p.stopped in ("target", "cap", "min_step")
        assert p.held_progress <= 1.0 and (p.stopped != "target" or p.held_progress == 1.0)
        assert pp.plan(TARGETS, 2, s, list(drops)) == p    # a replay decides the same


def test_rounds_table_is_markdown():
    rows = [{"round": 1, "start_round": 0, "planned_density": 0.3, "density": 0.3001, "planned_drop_pp": 0.25,
             "measured_drop_pp": 0.4, "drop_bound_pp": 0.75, "accuracy": 0.91, "held": True}]
    t = pp.rounds_table(rows).splitlines()
    assert t[0].startswith("| round | from round | planned density |")
    assert t[2] == "| 1 | 0 | 30.00% | 30.01% | 0.25 | 0.40 | 0.75 | 91.00% | yes |"


DOC = {"rounds": 2, "iters_per_round": 10, "finetune_iters": 0, "lr_factor": 0.1, "densities": {"*": 0.1}}


def test_schedule_key_is_validated_and_round_trips():
    s = from_dict(dict(DOC, closed_loop={"max_drop_pp": 0.5, "max_rounds": 6}), ["ip1"])
    assert s.closed_loop == {"max_drop_pp": 0.5, "max_rounds": 6}
    assert from_dict(s.to_dict(), ["ip1"]).closed_loop == s.closed_loop
    assert from_dict(DOC, ["ip1"]).closed_loop is None and "closed_loop" not in from_dict(DOC, ["ip1"]).to_dict()
    for bad, word in (({"max_drop_pp": 0, "max_rounds": 6}, "max_drop_pp"),
                      ({"max_drop_pp": True, "max_rounds": 6}, "max_drop_pp"),
                      ({"max_drop_pp": 0.5, "max_rounds": 1}, "below rounds"),
                      ({"max_drop_pp": 0.5, "max_rounds": 2.5}, "max_rounds"),
                      ({"max_drop_pp": 0.5}, "max_rounds"), ([0.5, 6], "max_rounds"),
                      ({"max_drop_pp": 0.5, "max_rounds": 6, "past_targets": 1}, "past_targets"),
                      ({"max_drop_pp": 0.5, "max_rounds": 6, "beyond": True}, "optionally")):
        with pytest.raises(InputError) as e:
            from_dict(dict(DOC, closed_loop=bad), ["ip1"], where="s.json")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("s.json: closed_loop") and word in msg


def test_past_targets_goes_on_while_rounds_hold_and_keeps_the_last_that_held():
    s = pp.Settings(0.5, 12, past_targets=True)
    drops = [0.0, 0.1, 0.2]              # to the targets, then past them with slack, steps at most the first
    p = pp.plan(TARGETS, 2, s, drops)
    assert [t["progress"] for t in p.tried] == [0.5, 1.0, 1.5]
    assert p.stopped is None and p.next.progress == 2.0
    for n, t in TARGETS.items():         # past the targets every layer keeps target ** progress, sparser
        assert p.next.densities[n] == pytest.approx(t ** 2.0) and p.next.densities[n] < t
    assert p.next.planned_drop_pp == 0.5   # the whole budget, never more
    # a round over budget is retried from the last that held at a smaller step, never built on
    p = pp.plan(TARGETS, 2, s, drops + [0.9])
    assert p.held_round == 3 and p.held_progress == 1.5 and p.next.start_round == 3
    assert 1.5 < p.next.progress < p.tried[-1]["progress"]


def test_past_targets_ends_at_the_smallest_step_or_the_cap_never_at_the_targets():
    s = pp.Settings(0.5, 40, past_targets=True)
    drops, p = [], pp.plan(TARGETS, 2, s, [])
    while p.next is not None:
        drops.append(0.0 if p.next.progress <= 3.0 else 0.6)   # holds up to 3x the way, not beyond
        p = pp.plan(TARGETS, 2, s, drops)
    assert p.stopped == "min_step" and 2.5 <= p.held_progress <= 3.0
    assert all(t["held"] == (t["progress"] <= 3.0) for t in p.tried)
    capped = pp.plan(TARGETS, 2, pp.Settings(0.5, 3, past_targets=True), [0.0, 0.0, 0.0])
    assert capped.stopped == "cap" and capped.held_progress == 1.5
    # without it, the same drops stop at the targets
    assert pp.plan(TARGETS, 2, pp.Settings(0.5, 40), [0.0, 0.0]).stopped == "target"


def test_search_loop_is_what_max_drop_declares():
    from caffe_dc.algorithms import schedule as schedules
    loop = schedules.search_loop(0.5)
    assert loop == {"max_drop_pp": 0.5, "max_rounds": schedules.SEARCH_ROUNDS, "past_targets": True}
    s = from_dict(dict(DOC, closed_loop=loop), ["ip1"])
    assert s.closed_loop == loop and from_dict(s.to_dict(), ["ip1"]).closed_loop == loop
    doc = schedules.default_document(1000)
    assert doc["closed_loop"] == schedules.search_loop(schedules.DEFAULT_MAX_DROP_PP)
    assert doc["budget"]["max_drop_pp"] == schedules.DEFAULT_MAX_DROP_PP


# ---------------------------------------------------------------- what the prune stage feeds the plan

def test_the_loop_measures_against_the_references_last_evaluation_not_its_best():
    import dataclasses

    from caffe_dc.stages.prune import baseline
    from caffe_dc.stages.reference import Record

    evals = [[1000, 0.871], [2000, 0.884], [3000, 0.879], [4000, 0.882]]
    stopped = Record(caffemodel="r.caffemodel", accuracy=0.884, iters=2000, stopped_at=4000, best_iter=2000,
                     rule="early stopping", evaluations=evals)
    b = baseline(stopped)
    assert b.accuracy == 0.882 and "last validation evaluation" in b.what and "4000" in b.what
    annealed = dataclasses.replace(stopped, accuracy=0.893,
                                   anneal={"accuracy": 0.893, "evaluations": [[1000, 0.893], [2000, 0.89]]})
    b = baseline(annealed)
    assert b.accuracy == 0.89 and "annealing" in b.what
    for rule in ("fixed: 2000 iterations", "given weights"):   # not chosen on validation: its own figure
        b = baseline(Record(caffemodel="r.caffemodel", accuracy=0.9, iters=0, stopped_at=None, best_iter=None,
                            rule=rule))
        assert b.accuracy == 0.9 and rule in b.what


def test_a_drop_is_judged_by_the_bound_of_its_paired_interval():
    import numpy as np

    from caffe_dc.algorithms import stats
    from caffe_dc.stages.prune import judged_drop

    rng = np.random.RandomState(0)
    ref = rng.rand(5000) < 0.9
    rnd = ref.copy()
    rnd[rng.choice(np.flatnonzero(ref), 70, replace=False)] = False   # 70 images lost, 60 won: a 0.2 pp drop
    rnd[rng.choice(np.flatnonzero(~ref), 60, replace=False)] = True
    j = judged_drop(ref.mean(), ref, rnd, 0.5)
    cmp = stats.paired(ref, rnd, margin=0.005)
    assert j["measured_drop_pp"] == pytest.approx(100 * (ref.mean() - rnd.mean()))
    # against the reference model's own figure the bound is the interval's far end, well above the point
    assert j["drop_bound_pp"] == pytest.approx(-100 * cmp["diff_low"])
    assert j["drop_bound_pp"] > j["measured_drop_pp"] + 0.3
    # against a lower (unbiased) figure, both move down by the difference
    lower = judged_drop(ref.mean() - 0.002, ref, rnd, 0.5)
    assert lower["drop_bound_pp"] == pytest.approx(j["drop_bound_pp"] - 0.2)
    assert lower["measured_drop_pp"] == pytest.approx(j["measured_drop_pp"] - 0.2)
    same = judged_drop(ref.mean(), ref, ref, 0.5)              # no image changed: little noise to allow for
    assert 0 < same["drop_bound_pp"] < 0.1 and same["paired_vs_reference"]["only_a"] == 0
    # a loop at a 0.5 pp budget holds on the point drop here but not on the bound
    assert j["measured_drop_pp"] <= 0.5 < j["drop_bound_pp"]
