"""Sharing a target rate out among the layers (algorithms/allocation.py, stages/choose.py): no Caffe needed."""
import numpy as np
import pytest

from caffe_dc.algorithms import allocation as ch
from caffe_dc.algorithms import sensitivity as sens
from caffe_dc.algorithms.schedule import from_dict
from caffe_dc.base.defaults import INDEX_BITS
from caffe_dc.base.errors import InputError

GRID = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])


def curve(name, weights, acc):
    return sens.Curve(name, "fc", weights, GRID, np.asarray(acc, float))


# a big layer that prunes cheaply down to 10%, then falls off a cliff; a small sensitive one
BIG = curve("big", 200000, [0.10, 0.15, 0.40, 0.86, 0.88, 0.89, 0.90])
SMALL = curve("small", 1000, [0.10, 0.20, 0.50, 0.70, 0.80, 0.88, 0.90])
BITS = {"big": 5, "small": 5}


def est(d):
    return sens.estimated_rate([BIG, SMALL], d, BITS)


def test_the_lower_hull_is_convex_and_keeps_the_ends():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([5.0, 1.0, 3.0, 0.5, 0.0])
    h = ch._hull(x, y)
    assert list(h) == [0, 1, 4]          # (2, 3) and (3, 0.5) lie above the hull


def test_least_drop_meets_the_rate_exactly_and_spares_the_small_layer():
    for rate in (15, 25):
        d = ch.least_drop(0.9, [BIG, SMALL], rate, BITS, 5, est)
        assert est(d) == pytest.approx(rate, rel=1e-3)
        shared = sens.choose_target_rate(0.9, [BIG, SMALL], rate, BITS)
        assert d["small"] > shared["small"]          # its bits hardly count: it keeps more weights
        summed = sum(float(sens.drop_at(c, 0.9, d[c.name])) for c in (BIG, SMALL))
        assert summed <= sum(float(sens.drop_at(c, 0.9, shared[c.name])) for c in (BIG, SMALL)) + 1e-9
    with pytest.raises(InputError, match="out of reach"):
        ch.least_drop(0.9, [BIG, SMALL], 10000, BITS, 5, est)


def test_the_allocation_is_a_named_budget_option():
    base = {"rounds": 1, "iters_per_round": 1, "finetune_iters": 1, "lr_factor": 0.1}
    for a in ch.Allocation:
        s = from_dict(dict(base, budget={"target_rate": 20, "allocation": a.value}), ["big"])
        assert ch.Allocation(s.budget["allocation"]) is a
    with pytest.raises(InputError, match="'shared_drop' or 'least_drop', got 'greedy'"):
        from_dict(dict(base, budget={"target_rate": 20, "allocation": "greedy"}), ["big"])


def test_the_run_follows_the_declared_schedule_with_what_was_chosen():
    """A declared setting the choice does not read (the closed loop's drop) takes effect when it changes,
    and a closed loop's cap is raised to the rounds chosen."""
    from caffe_dc.stages.run import Run, RunOptions

    doc = {"rounds": 3, "iters_per_round": 10, "finetune_iters": 10, "lr_factor": 0.1,
           "budget": {"target_rate": 20}, "closed_loop": {"max_drop_pp": 1.0, "max_rounds": 4}}
    chosen = {"rounds": 6, "densities": {"big": [0.5, 0.3, 0.2, 0.15, 0.12, 0.1]}, "bits": {"big": 5}, "source": {}}
    r = Run(opts=RunOptions(net="lenet-5"), src=None, info=None, preset="full", declared=from_dict(doc, ["big"]),
            declared_doc=doc, schedule_source="test", run_dir=".", command="", snapshot_every=1, test_iter=1,
            state={"choose": {"done": True, "schedule": chosen}})
    got = r.schedule_doc
    assert got["densities"] == chosen["densities"] and got["rounds"] == 6
    assert got["closed_loop"] == {"max_drop_pp": 1.0, "max_rounds": 6}
    r.declared_doc = dict(doc, closed_loop={"max_drop_pp": 2.0, "max_rounds": 20})
    assert r.schedule_doc["closed_loop"] == {"max_drop_pp": 2.0, "max_rounds": 20}


@pytest.mark.parametrize("allocation", list(ch.Allocation))
def test_flat_curves_meet_the_rate_instead_of_jumping_to_the_sparsest(allocation):
    """A net at chance level loses nothing anywhere: every density is 'free', and a budget that moves in
    jumps would send every layer to the sparsest grid point, far past the rate."""
    flat = [curve("big", 200000, [0.1] * 7), curve("small", 1000, [0.1] * 7)]
    bits = {"big": 5, "small": 5}

    def rate_of(d):
        return sens.estimated_rate(flat, d, bits)
    d = ch.allocate(allocation, 0.1, flat, 20, bits, INDEX_BITS)
    assert rate_of(d) == pytest.approx(20, rel=1e-3)
