"""Compression schedules as data: a small JSON file says how a net is pruned and quantized.

The format is documented in ``docs/schedule.md``. In short::

    {"format": "caffe-dc-schedule", "version": 1,
     "rounds": 3, "iters_per_round": 3000, "finetune_iters": 3000, "lr_factor": 0.1,
     "densities": {"conv1": 0.495, "conv2": [0.5, 0.2, 0.09], "[fc]": 0.06},
     "bits": {"[conv]": 8, "[fc]": 5}}

A density is either the layer's final kept share (the rounds then go
geometrically from 1.0 to it, ``pruning.iterative_schedule``, as the presets
always did) or one target per round. Keys are a layer name, ``[conv]`` /
``[fc]`` for every layer of that kind, or ``*`` for every layer; a layer name
wins over its kind, a kind over ``*``. A layer that no key matches is left
dense (``densities``) or at the pipeline's default bits (``bits``).

``load_schedule(path, layers)`` checks everything against the net's
prunable layers and raises one-line ``InputError``s; ``save_schedule``
writes what ``load_schedule`` reads.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

from caffe_dc.algorithms.allocation import Allocation
from caffe_dc.algorithms.early_stopping import EarlyStopping
from caffe_dc.algorithms.pruning import iterative_schedule
from caffe_dc.algorithms.quantization import CentroidGrad
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base import defaults, layer_policy
from caffe_dc.base.limits import MAX_BITS, MIN_CALIBRATION_IMAGES
from caffe_dc.base.params import ALL

FORMAT = "caffe-dc-schedule"
VERSION = 1
KINDS = layer_policy.KINDS
REQUIRED = ("rounds", "iters_per_round", "finetune_iters", "lr_factor", "densities")
OPTIONAL = ("format", "version", "net", "description", "bits", "snapshot_every", "reference_iters",
            "reference_eval_every", "reference_patience", "reference_anneal", "centroid_grad", "source", "budget",
            "closed_loop", "reference_solver", "reconstruct")
# A budget instead of densities: the run measures its reference's sensitivity and chooses them itself.
BUDGET_AIMS = ("target_rate", "max_drop_pp")
BUDGET_KEYS = BUDGET_AIMS + ("round_drop_pp", "min_rounds", "max_rounds", "images", "allocation")
DEFAULT_MAX_DROP_PP = 0.5   # a net of one's own without a schedule
SEARCH_ROUNDS = 12          # the round cap of a --max-drop search (closed loop past the targets)
LOOP_KEYS = ("max_drop_pp", "max_rounds", "past_targets")
RECONSTRUCT_KEYS = ("images",)
# The reference's own learning-rate recipe (Caffe SolverParameter fields), where the net's solver is kept
# for retraining: a reference trained to convergence, while pruning and fine-tuning keep the solver they
# were tuned with (lr_factor x its base_lr, its policy).
REFERENCE_SOLVER_KEYS = ("base_lr", "lr_policy", "gamma", "power", "stepsize", "stepvalue", "momentum",
                         "weight_decay")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
MAX_ITERS = (1 << 31) - 1   # Caffe's iteration counters are int32
MAX_ROUNDS = 1000           # each round retrains: far past any schedule, short of a list that fills memory


def layer_kind(caffe_type: str) -> str:
    """'conv' or 'fc' (``base.layer_policy``): what the paper tells apart."""
    return layer_policy.kind(caffe_type)


def kind_key(kind: str) -> str:
    return "[%s]" % kind


class Schedule:
    """A validated schedule, spelled out for one net's layers.

    ``densities``: {layer: [density after round 1, ..., after round ``rounds``]} for every
    layer that is pruned; ``bits``: {layer: bits} for the layers the file gives bits for.
    """

    def __init__(self, rounds: int, iters_per_round: int, finetune_iters: int, lr_factor: float,
                 densities: Dict[str, List[float]], bits: Optional[Dict[str, int]] = None,
                 snapshot_every: Optional[int] = None, reference_iters: Optional[int] = None,
                 net: Optional[str] = None, description: str = "", source: Optional[dict] = None,
                 spec: Optional[dict] = None, centroid_grad: str = CentroidGrad.SUM.value,
                 budget: Optional[dict] = None, reference_eval_every: Optional[int] = None,
                 reference_patience: Optional[int] = None):
        self.rounds = rounds
        self.iters_per_round = iters_per_round
        self.finetune_iters = finetune_iters
        self.lr_factor = lr_factor
        self.densities = densities
        self.bits = bits
        self.snapshot_every = snapshot_every
        self.reference_iters = reference_iters
        self.net = net
        self.description = description
        self.source = source
        self.spec = spec   # the file's own densities / bits, keys as written (what save writes back)
        self.centroid_grad = centroid_grad   # quantization.CentroidGrad's value for the fine-tuning
        self.budget = budget   # {"target_rate" | "max_drop_pp": ..., recipe}: densities are chosen by the run
        self.closed_loop: Optional[dict] = None   # {"max_drop_pp", "max_rounds"}: rounds re-planned (prune_plan)
        # both given: the reference trains until validation accuracy stops improving, reference_iters the cap
        self.reference_eval_every = reference_eval_every
        self.reference_patience = reference_patience
        # with the rule: once it stops, the reference goes on at the retraining rate (lr x lr_factor) under
        # the same rule, so the dense control measures compression, not a late learning-rate decay
        self.reference_anneal = False
        self.reference_solver: Optional[dict] = None   # REFERENCE_SOLVER_KEYS overriding the net's solver
        # {"images": N}: each prune round starts from its pruned net refitted layer by layer to the reference's
        # outputs on N training images (pycaffe.layerwise.reconstruct), then retrains
        self.reconstruct: Optional[dict] = None

    def reference_rule(self) -> Optional[EarlyStopping]:
        """The reference's early-stopping rule, or None for a fixed ``reference_iters``."""
        if self.reference_eval_every is None:
            return None
        return EarlyStopping(self.reference_eval_every, self.reference_patience, self.reference_iters)

    def round_densities(self, layer: str) -> List[float]:
        """Kept share of ``layer`` after each round; [1.0] * rounds for a layer left dense."""
        return list(self.densities.get(layer, [1.0] * self.rounds))

    def final_densities(self) -> Dict[str, float]:
        return {n: d[-1] for n, d in self.densities.items()}

    def to_dict(self) -> dict:
        out = {"format": FORMAT, "version": VERSION}
        if self.net:
            out["net"] = self.net
        if self.description:
            out["description"] = self.description
        out.update(rounds=self.rounds, iters_per_round=self.iters_per_round, finetune_iters=self.finetune_iters,
                   lr_factor=self.lr_factor)
        if self.snapshot_every is not None:
            out["snapshot_every"] = self.snapshot_every
        if self.reference_iters is not None:
            out["reference_iters"] = self.reference_iters
        if self.reference_eval_every is not None:
            out.update(reference_eval_every=self.reference_eval_every, reference_patience=self.reference_patience)
        if self.reference_anneal:
            out["reference_anneal"] = True
        if self.reference_solver:
            out["reference_solver"] = dict(self.reference_solver)
        if self.centroid_grad != CentroidGrad.SUM.value:
            out["centroid_grad"] = self.centroid_grad
        spec = self.spec or {}
        out["densities"] = spec.get("densities", self.densities)
        bits = spec.get("bits", self.bits)
        if bits:
            out["bits"] = bits
        if self.source:
            out["source"] = self.source
        if self.budget:
            out["budget"] = self.budget
        if self.closed_loop is not None:
            out["closed_loop"] = dict(self.closed_loop)
        if self.reconstruct is not None:
            out["reconstruct"] = dict(self.reconstruct)
        return out

    def __repr__(self):
        return "Schedule(%d rounds, %s)" % (self.rounds, self.final_densities())


# ---------------------------------------------------------------------------
# validation

def shown(v) -> str:
    """``v`` for a one-line message: short, and never the thousand digits of a huge JSON integer (whose
    ``repr`` Python 3.11 refuses past 4,300 digits)."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and abs(v) >= 10 ** 18:
        return "an integer of about %d digits" % int(abs(v).bit_length() * math.log10(2) + 1)
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def number(v, what: str, integer: bool = False, lo=None, hi=None, rule: str = "") -> Union[int, float]:
    """The one conversion every number of a schedule goes through: a JSON number (not a bool, not a
    string), finite as a float (an integer of 400 digits is not: ``float()`` overflows on it), integral
    if ``integer``, and in [``lo``, ``hi``]; anything else is one line naming the key ``what``. ``rule``
    says what the range means, e.g. "in (0, 1] (the kept share of weights)"."""
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, numbers.Integral if integer else numbers.Real):
        raise InputError("%s must be %s%s, got %s" % (what, kind, rule and " " + rule, shown(v)))
    try:
        f = float(v)
    except OverflowError:
        raise InputError("%s is too large (%s)" % (what, shown(v)))
    if not math.isfinite(f):
        raise InputError("%s must be a finite number, got %s" % (what, shown(v)))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rule = rule or ("in %s..%s" % (lo, hi) if lo is not None and hi is not None else
                        ">= %s" % lo if lo is not None else "<= %s" % hi)
        raise InputError("%s must be %s %s, got %s" % (what, kind, rule, shown(v)))
    return int(v) if integer else f


def _int(v, what: str, lo: int, hi: int = MAX_ITERS) -> int:
    return number(v, what, integer=True, lo=lo, hi=hi)


def _density(v, what: str) -> float:
    d = number(v, what, rule="in (0, 1] (the kept share of weights)", hi=1.0)
    if not d > 0:
        raise InputError("%s must be a number in (0, 1] (the kept share of weights), got %s" % (what, shown(v)))
    return d


def _resolve(table: Mapping[str, object], layers: Mapping[str, Optional[str]], what: str) -> Dict[str, object]:
    """Spell a {name | [kind] | *: value} table out per layer (name > kind > *)."""
    if not isinstance(table, Mapping):
        raise InputError("%s must be an object of layer: value, got %s" % (what, type(table).__name__))
    for key in table:
        if key == ALL or key in layers:
            continue
        if key in (kind_key(k) for k in KINDS):
            if any(v is None for v in layers.values()):
                raise InputError("%s: %s needs the layers' types, which were not given" % (what, key))
            continue
        raise InputError("%s: no prunable layer %r in the net (layers: %s; or %s, %s, %s)"
                         % (what, key, ", ".join(layers) or "none", kind_key("conv"), kind_key("fc"), ALL))
    out = {}
    for name, kind in layers.items():
        for key in (name, kind_key(kind) if kind else None, ALL):
            if key is not None and key in table:
                out[name] = table[key]
                break
    return out


def _round_list(v, rounds: int, what: str) -> List[float]:
    if isinstance(v, (list, tuple)):
        if len(v) != rounds:
            raise InputError("%s: %d densities for %d rounds" % (what, len(v), rounds))
        ds = [_density(x, "%s round %d" % (what, i + 1)) for i, x in enumerate(v)]
        for i in range(1, rounds):
            if ds[i] > ds[i - 1]:
                raise InputError("%s: round %d keeps %g, more than round %d's %g (pruned weights never come back)"
                                 % (what, i + 1, ds[i], i, ds[i - 1]))
        return ds
    return iterative_schedule(_density(v, what), rounds)


def _layer_map(layers) -> Dict[str, Optional[str]]:
    """{name: kind or None} from a list of names, or from {name: kind or Caffe type}."""
    if isinstance(layers, Mapping):
        return {n: (t if t in KINDS else layer_kind(t)) if t else None for n, t in layers.items()}
    return {n: None for n in layers}


def from_dict(doc, layers: Union[Sequence[str], Mapping[str, str]], where: str = "schedule") -> Schedule:
    """Validate a parsed schedule against the net's prunable ``layers`` (names, or {name: type or kind})."""
    lmap = _layer_map(layers)
    try:
        return _from_dict(doc, lmap)
    except InputError as e:
        raise InputError("%s: %s" % (where, e))


def _from_dict(doc, lmap) -> Schedule:
    if not isinstance(doc, Mapping):
        raise InputError("a schedule is a JSON object, got %s" % type(doc).__name__)
    unknown = sorted(set(doc) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InputError("unknown key %s (known: %s)" % (", ".join(map(repr, unknown)), ", ".join(REQUIRED + OPTIONAL)))
    budget = _budget(doc.get("budget"))
    missing = [k for k in REQUIRED if k not in doc and not (k == "densities" and budget)]
    if missing:
        raise InputError("missing %s" % ", ".join(missing))
    if doc.get("format", FORMAT) != FORMAT:
        raise InputError("format is %s, not %r" % (shown(doc["format"]), FORMAT))
    if doc.get("version", VERSION) != VERSION:
        raise InputError("version %s; this caffe-dc reads version %d" % (shown(doc["version"]), VERSION))
    rounds = _int(doc["rounds"], "rounds", 1, MAX_ROUNDS)
    iters = _int(doc["iters_per_round"], "iters_per_round", 1)
    ft = _int(doc["finetune_iters"], "finetune_iters", 0)
    lr = number(doc["lr_factor"], "lr_factor", rule="> 0")
    if not lr > 0:
        raise InputError("lr_factor must be a number > 0, got %s" % shown(doc["lr_factor"]))
    snap = doc.get("snapshot_every")
    snap = None if snap is None else _int(snap, "snapshot_every", 1)
    ref = doc.get("reference_iters")
    ref = None if ref is None else _int(ref, "reference_iters", 0)
    every, patience = _reference_rule(doc, ref)
    grad = doc.get("centroid_grad", CentroidGrad.SUM.value)
    if grad not in [m.value for m in CentroidGrad]:
        raise InputError("centroid_grad must be %s, got %s" % (" or ".join('"%s"' % m.value for m in CentroidGrad),
                                                                shown(grad)))
    dens = {n: _round_list(v, rounds, "densities[%r]" % n)
            for n, v in _resolve(doc.get("densities") or {}, lmap, "densities").items()}
    bits = None
    if doc.get("bits") is not None:
        bits = {}
        for n, v in _resolve(doc["bits"], lmap, "bits").items():
            bits[n] = number(v, "bits[%r]" % n, integer=True, lo=1, hi=MAX_BITS)
    for k in ("net", "description"):
        if doc.get(k) is not None and not isinstance(doc[k], str):
            raise InputError("%s must be a string, got %s" % (k, shown(doc[k])))
    spec = {"densities": dict(doc.get("densities") or {})}
    if doc.get("bits") is not None:
        spec["bits"] = dict(doc["bits"])
    out = Schedule(rounds, iters, ft, float(lr), dens, bits, snap, ref, doc.get("net"), doc.get("description") or "",
                   doc.get("source"), spec, grad, budget, every, patience)
    if doc.get("closed_loop") is not None:
        out.closed_loop = _closed_loop(doc["closed_loop"], rounds)
    anneal = doc.get("reference_anneal", False)
    if not isinstance(anneal, bool):
        raise InputError("reference_anneal must be true or false, got %s" % shown(anneal))
    if anneal and every is None:
        raise InputError("reference_anneal needs the early-stopping rule (reference_eval_every, reference_patience)")
    out.reference_anneal = anneal
    if doc.get("reference_solver") is not None:
        out.reference_solver = check_reference_solver(doc["reference_solver"])
    if doc.get("reconstruct") is not None:
        out.reconstruct = check_reconstruct(doc["reconstruct"])
    return out


def check_reconstruct(v) -> dict:
    """``reconstruct``: ``{"images": N}``, the training images each prune round's refit reads."""
    if not isinstance(v, Mapping) or set(v) != set(RECONSTRUCT_KEYS):
        raise InputError("reconstruct must be an object with %s, such as {\"images\": 1000}, got %s"
                         % (" and ".join(RECONSTRUCT_KEYS), shown(v)))
    return {"images": _int(v["images"], "reconstruct.images", MIN_CALIBRATION_IMAGES)}


def _budget(v) -> Optional[dict]:
    """A schedule's ``budget``: exactly one aim (``target_rate`` > 1, or ``max_drop_pp`` >= 0) and the
    chooser's optional recipe (``round_drop_pp`` > 0, ``min_rounds`` <= ``max_rounds``, ``images``)."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise InputError("budget must be an object such as {\"target_rate\": 40}, got %s" % shown(v))
    unknown = sorted(set(v) - set(BUDGET_KEYS))
    if unknown:
        raise InputError("budget: unknown key %s (known: %s)" % (", ".join(map(repr, unknown)), ", ".join(BUDGET_KEYS)))
    aims = [k for k in BUDGET_AIMS if v.get(k) is not None]
    if len(aims) != 1:
        raise InputError("budget needs exactly one of %s" % " or ".join(BUDGET_AIMS))
    out = {}
    for k, x in v.items():
        if x is None:
            continue
        if k == "allocation":
            names = [a.value for a in Allocation]
            if x not in names:
                raise InputError("budget.allocation must be %s, got %s" % (" or ".join(map(repr, names)), shown(x)))
            out[k] = x
            continue
        if k in ("min_rounds", "max_rounds", "images"):
            out[k] = _int(x, "budget.%s" % k, 1, MAX_ROUNDS if k != "images" else MAX_ITERS)
            continue
        rule = {"target_rate": "> 1", "max_drop_pp": ">= 0", "round_drop_pp": "> 0"}[k]
        x = number(x, "budget.%s" % k, rule=rule)
        if not {"target_rate": x > 1, "max_drop_pp": x >= 0, "round_drop_pp": x > 0}[k]:
            raise InputError("budget.%s must be a number %s, got %s" % (k, rule, shown(v[k])))
        out[k] = x
    if out.get("min_rounds", 1) > out.get("max_rounds", out.get("min_rounds", 1)):
        raise InputError("budget: min_rounds %d > max_rounds %d" % (out["min_rounds"], out["max_rounds"]))
    return out


def _closed_loop(v, rounds: int) -> dict:
    """``{"max_drop_pp": > 0, "max_rounds": >= rounds[, "past_targets": bool]}`` (``algorithms.prune_plan``)."""
    if not isinstance(v, Mapping) or not {"max_drop_pp", "max_rounds"} <= set(v) <= set(LOOP_KEYS):
        raise InputError("closed_loop must be an object with max_drop_pp and max_rounds (and optionally "
                         "past_targets), got %s" % shown(v))
    past = v.get("past_targets", False)
    if not isinstance(past, bool):
        raise InputError("closed_loop past_targets must be true or false, got %s" % shown(past))
    drop = number(v["max_drop_pp"], "closed_loop max_drop_pp", hi=100, rule="in (0, 100] (percentage points)")
    if not drop > 0:
        raise InputError("closed_loop max_drop_pp must be a number in (0, 100] (percentage points), got %s"
                         % shown(v["max_drop_pp"]))
    cap = _int(v["max_rounds"], "closed_loop max_rounds", 1, MAX_ROUNDS)
    if cap < rounds:
        raise InputError("closed_loop max_rounds (%d) is below rounds (%d), where the loop starts" % (cap, rounds))
    out = {"max_drop_pp": drop, "max_rounds": cap}
    if past:   # only then: a loop without it reads (and fingerprints) as it always did
        out["past_targets"] = True
    return out


def check_reference_solver(v) -> dict:
    """``reference_solver``: Caffe solver fields (``REFERENCE_SOLVER_KEYS``) for the reference's training only."""
    if not isinstance(v, Mapping) or not v or not set(v) <= set(REFERENCE_SOLVER_KEYS):
        raise InputError("reference_solver must be an object of solver fields among %s, got %s"
                         % (", ".join(REFERENCE_SOLVER_KEYS), shown(v)))
    out = {}
    for k, x in v.items():
        what = "reference_solver.%s" % k
        if k == "lr_policy":
            if x not in LR_POLICIES:
                raise InputError("%s must be one of %s, got %s" % (what, ", ".join(LR_POLICIES), shown(x)))
            out[k] = x
        elif k == "stepsize":
            out[k] = _int(x, what, 1)
        elif k == "stepvalue":
            steps = [_int(i, what, 1) for i in (x if isinstance(x, list) else [None])]
            if steps != sorted(set(steps)):
                raise InputError("%s must be increasing iterations, got %s" % (what, shown(x)))
            out[k] = steps
        else:
            out[k] = number(x, what, lo=0)
    if out.get("base_lr", 1.0) <= 0:
        raise InputError("reference_solver.base_lr must be > 0, got %s" % shown(out["base_lr"]))
    if out.get("lr_policy") == "multistep" and "stepvalue" not in out:
        raise InputError("reference_solver: lr_policy multistep needs stepvalue (the iterations where lr drops)")
    return out


def _reference_rule(doc, cap: Optional[int]):
    """(reference_eval_every, reference_patience): both or neither, and then the cap is needed."""
    every, patience = doc.get("reference_eval_every"), doc.get("reference_patience")
    if every is None and patience is None:
        return None, None
    if every is None or patience is None:
        raise InputError("reference_eval_every and reference_patience go together (early stopping); %s is missing"
                         % ("reference_eval_every" if every is None else "reference_patience"))
    every = _int(every, "reference_eval_every", 1)
    patience = _int(patience, "reference_patience", 1)
    if not cap:
        raise InputError("early stopping needs reference_iters >= 1, the cap on the reference's iterations")
    return every, patience


def load_schedule(path: str, layers: Union[Sequence[str], Mapping[str, str]]) -> Schedule:
    """Read and validate a schedule file for a net whose prunable layers are ``layers``.

    ``layers``: names in net order, or {name: Caffe type or 'conv'/'fc'} (needed for ``[conv]`` / ``[fc]`` keys).
    """
    return from_dict(read_document(path), layers, where=path)


def read_document(path: str) -> dict:
    """A schedule file's JSON, not yet validated (callers may apply overrides first)."""
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise InputError("cannot read schedule %s: %s" % (path, e.strerror or e))
    except (ValueError, RecursionError) as e:   # RecursionError: arrays nested thousands deep
        raise InputError("schedule %s is not valid JSON (%s)" % (path, " ".join(str(e).split())[:200]))


def search_loop(max_drop_pp: float, max_rounds: int = SEARCH_ROUNDS) -> dict:
    """The closed loop of a ``max_drop_pp`` budget: the chosen densities are a first waypoint, and pruning goes
    on past them while the measured validation drop after retraining stays within the budget
    (``prune_plan``, past the targets): the largest rate it finds within the drop, not the curves' guess."""
    return {"max_drop_pp": float(max_drop_pp), "max_rounds": int(max_rounds), "past_targets": True}


def default_document(solver_max_iter: int) -> dict:
    """The schedule of a net of one's own when none is given: a budget, not fixed densities. The run
    measures its reference's per-layer sensitivity on the validation split, prunes each layer as far
    as it can while pruning it alone costs at most ``DEFAULT_MAX_DROP_PP`` of validation accuracy, and
    then further while the measured drop after retraining stays within it (``search_loop``); each of
    the rounds (3 to 10, as the curves need) retrains a fifth of the solver's own max_iter at a tenth
    of its learning rate (the paper's LeNet factor); bits are the layer types' defaults
    (``base.layer_policy``)."""
    iters = max(1, int(solver_max_iter) // 5)
    bits = {kind_key(k): layer_policy.default_bits(k) for k in KINDS}
    return {"format": FORMAT, "version": VERSION,
            "description": "caffe-dc's default for a net of your own: each layer pruned as far as its validation "
                           "sensitivity allows within a %g pp drop; %s; each round and the fine-tuning retrain "
                           "max_iter/5 of your solver at 1/10 of its base_lr"
                           % (DEFAULT_MAX_DROP_PP, ", ".join("%d-bit %s" % (b, k.strip("[]")) for k, b in bits.items())),
            "rounds": 3, "iters_per_round": iters, "finetune_iters": iters, "lr_factor": defaults.LR_FACTOR,
            # three rounds at least, as the presets take: the chooser's bare minimum is for a quick look
            "budget": {"max_drop_pp": DEFAULT_MAX_DROP_PP, "min_rounds": 3, "max_rounds": defaults.MAX_ROUNDS},
            "bits": bits,
            "closed_loop": search_loop(DEFAULT_MAX_DROP_PP)}


def builtin(net: str, preset: str = "full") -> str:
    """Path of a preset's schedule shipped in ``caffe_dc/zoo/schedules/`` (``<net>-<preset>.json``)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo", "schedules",
                        "%s-%s.json" % (net, preset))
    if not os.path.isfile(path):
        raise InputError("no %s schedule for %s shipped with caffe-dc (%s)" % (preset, net, path))
    return path


def save_schedule(schedule: Union[Schedule, dict], path: str) -> str:
    doc = schedule.to_dict() if isinstance(schedule, Schedule) else schedule
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path
