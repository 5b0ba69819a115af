"""The nets caffe-dc knows: where their prototxts and solvers live, and how to fill them in.

The prototxts in ``prototxt/`` name their LMDBs ``TRAIN_LMDB`` / ``TEST_LMDB``
and the solvers name their net ``NET``; the functions here substitute real
paths through protobuf, never by editing text.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple, Optional

from .caffemodel import load_net_proto, load_solver_proto
from .errors import InputError


class NetSpec(NamedTuple):
    name: str          # canonical name, as in paper.py
    dataset: str       # "mnist" (28x28 gray, LMDB) or "imagenet"
    train_val: str
    deploy: str
    solver: str


def home() -> Path:
    env = os.environ.get("CAFFE_DC_HOME")
    return Path(env) if env else Path(__file__).resolve().parent.parent


def _spec(name, dataset, stem):
    h = home()
    return NetSpec(name, dataset, str(h / "prototxt" / (stem + "_train_val.prototxt")),
                   str(h / "prototxt" / (stem + "_deploy.prototxt")), str(h / "solvers" / (stem + "_solver.prototxt")))


_STEMS = {"lenet-300-100": ("mnist", "lenet_300_100"), "lenet-5": ("mnist", "lenet5"),
          "alexnet": ("imagenet", "alexnet"), "vgg16": ("imagenet", "vgg16")}
_ALIASES = {"lenet300100": "lenet-300-100", "lenet5": "lenet-5", "alexnet": "alexnet", "vgg16": "vgg16"}
NAMES = tuple(_STEMS)


def canonical(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if key not in _ALIASES:
        raise InputError("unknown net %r (known: %s)" % (name, ", ".join(NAMES)))
    return _ALIASES[key]


def get(name: str) -> NetSpec:
    n = canonical(name)
    dataset, stem = _STEMS[n]
    return _spec(n, dataset, stem)


def train_val_with_sources(name: str, train_lmdb: str, test_lmdb: str, batch: Optional[int] = None,
                           test_batch: Optional[int] = None):
    """The net's train_val NetParameter with its Data layers reading the given LMDBs."""
    spec = get(name)
    net = load_net_proto(spec.train_val)
    for layer in net.layer:
        if layer.type != "Data":
            continue
        test = any(r.phase == 1 for r in layer.include)
        layer.data_param.source = os.path.abspath(test_lmdb if test else train_lmdb)
        b = test_batch if test else batch
        if b:
            layer.data_param.batch_size = int(b)
    for path in (train_lmdb, test_lmdb):
        if not os.path.isdir(path):
            raise InputError("no such LMDB: %s" % path)
    return net


def solver_for(name: str, net_prototxt: str, snapshot_prefix: str, **overrides):
    """The net's reference solver pointed at ``net_prototxt``, with field overrides."""
    sp = load_solver_proto(get(name).solver)
    sp.net = os.path.abspath(net_prototxt)
    sp.snapshot_prefix = os.path.abspath(snapshot_prefix)
    for k, v in overrides.items():
        if v is None:
            continue
        field = sp.DESCRIPTOR.fields_by_name.get(k)
        if field is None:
            raise InputError("solver has no field %r" % k)
        if field.label == field.LABEL_REPEATED:
            del getattr(sp, k)[:]
            getattr(sp, k).extend(v if isinstance(v, (list, tuple)) else [v])
        else:
            setattr(sp, k, v)
    return sp


def test_batch_size(net_param) -> int:
    from .solving import test_batch

    return test_batch(net_param)
