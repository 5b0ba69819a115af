"""The named options of weight clustering, as small documented enums (after TF-MOT's ``cluster_config``).

No numpy here: the command line takes its ``choices`` from these enums
(``choices()``) without paying for the algorithms' imports at start-up.
"""
from __future__ import annotations

import enum
from typing import List

from caffe_dc.base.errors import InputError


def parse_named(cls, name, what: str):
    """A member of the option enum ``cls`` from itself or its value in any case; one-line InputError otherwise."""
    if isinstance(name, cls):
        return name
    try:
        return cls(str(name).strip().lower())
    except ValueError:
        raise InputError("unknown %s %r (choose %s)" % (what, name, ", ".join(m.value for m in cls)))


class Init(enum.Enum):
    """How k-means places its initial centroids (section 3.1, Figure 4).

    LINEAR
        k centroids evenly spaced between the min and max of the (nonzero)
        weights. The paper's choice and our default: it keeps a few
        centroids out where the rare large weights are, which matter most.
    DENSITY
        Evenly spaced on the weights' CDF: the quantiles at (i + 1/2) / k,
        i.e. the medians of k equal-count bins. Centroids crowd around 0,
        where most weights are, and the large weights get few.
    RANDOM
        Forgy: k distinct weight values drawn at random (each value with
        probability proportional to how often it occurs), from
        ``np.random.default_rng(seed)``.
    """
    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"

    @classmethod
    def parse(cls, name) -> "Init":
        """An Init from its name, any case ('linear', 'DENSITY', ...); InputError otherwise."""
        return parse_named(cls, name, "centroid initialisation")


class CentroidGrad(enum.Enum):
    """How the gradients of one cluster's weights combine into its centroid's gradient.

    SUM
        dL/dC_k = sum_ij dL/dW_ij 1(I_ij = k): the paper's rule (section 3.2),
        the exact gradient of the loss with respect to the shared value, and
        our default. A large cluster moves fast.
    MEAN
        The sum divided by the cluster's size (TF-MOT's other choice): every
        centroid moves at the pace of one weight, so the retraining learning
        rate acts alike on a cluster of 3 and one of 30,000.
    """
    SUM = "sum"
    MEAN = "mean"

    @classmethod
    def parse(cls, name) -> "CentroidGrad":
        """A CentroidGrad from its name, any case; InputError otherwise."""
        return parse_named(cls, name, "centroid gradient")


def choices(cls) -> List[str]:
    """The values a command line accepts for the option enum ``cls``."""
    return [m.value for m in cls]
