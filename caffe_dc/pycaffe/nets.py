"""The four nets of the paper: where their prototxts and solvers live, and how to fill them in.

The prototxts in ``prototxt/`` read LMDBs named ``TRAIN_LMDB`` / ``TEST_LMDB``
and the solvers in ``solvers/`` name their net ``NET``; the functions here put
real paths in through protobuf, never by editing text, so a path with quotes
or backslashes cannot break the file and a renamed field fails loudly.

Each net's prunable layers are listed here, in net order, with the names of
the paper's Tables 2-5, so that every stage and report agrees on them
without instantiating a net (VGG-16 alone is 550 MB of weights).
"""
from __future__ import annotations

import enum
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from caffe_dc.pycaffe.caffemodel import caffe_pb2, load_net_proto, load_solver_proto
from caffe_dc.base.errors import InputError


class Dataset(str, enum.Enum):
    """What a net's Data layers expect. A ``str`` so ``spec.dataset == "mnist"`` keeps working."""

    MNIST = "mnist"        # 1x28x28 grey LMDB (MNIST, Fashion-MNIST), scaled by 1/256
    IMAGENET = "imagenet"  # 3x256x256 BGR LMDB from convert_imageset, cropped and mean-subtracted

    def __str__(self) -> str:
        return self.value


def home() -> Path:
    """The folder holding ``prototxt/`` and ``solvers/``: $CAFFE_DC_HOME, else the package's own ``zoo/``.

    They ship as package data, so an installed caffe-dc finds them without a
    checkout (the checkout's top-level ``prototxt`` and ``solvers`` are links
    to the same files).
    """
    env = os.environ.get("CAFFE_DC_HOME")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "zoo"


@dataclass(frozen=True)
class NetSpec:
    name: str                   # canonical name, as in paper.py and the CLI
    dataset: Dataset
    stem: str                   # file stem: prototxt/<stem>_train_val.prototxt, ...
    prunable: Tuple[str, ...]   # Convolution / InnerProduct layers in net order (= the paper's table rows)

    # Paths are resolved on every access so that CAFFE_DC_HOME may change after import (tests do).
    @property
    def train_val(self) -> str:
        return _file("prototxt", self.stem + "_train_val.prototxt")

    @property
    def deploy(self) -> str:
        return _file("prototxt", self.stem + "_deploy.prototxt")

    @property
    def solver(self) -> str:
        return _file("solvers", self.stem + "_solver.prototxt")


def _file(folder: str, fname: str) -> str:
    d = home() / folder
    if not d.is_dir():
        raise InputError("caffe-dc's %s/ folder is not at %s: set CAFFE_DC_HOME to a folder with prototxt/ and solvers/" % (folder, d))
    return str(d / fname)


_VGG16_CONVS = tuple("conv%d_%d" % (b, i) for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1))

NETS: Dict[str, NetSpec] = {
    "lenet-300-100": NetSpec("lenet-300-100", Dataset.MNIST, "lenet_300_100", ("ip1", "ip2", "ip3")),
    "lenet-5": NetSpec("lenet-5", Dataset.MNIST, "lenet5", ("conv1", "conv2", "ip1", "ip2")),
    "alexnet": NetSpec("alexnet", Dataset.IMAGENET, "alexnet",
                       ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")),
    "vgg16": NetSpec("vgg16", Dataset.IMAGENET, "vgg16", _VGG16_CONVS + ("fc6", "fc7", "fc8")),
}
NAMES = tuple(NETS)

# Spellings people use, compared after lower-casing and dropping everything but letters and digits.
_ALIASES = {
    "lenet300100": "lenet-300-100",
    "lenet5": "lenet-5",
    "alexnet": "alexnet", "bvlcalexnet": "alexnet",
    "vgg16": "vgg16", "vggilsvrc16layers": "vgg16", "vggd": "vgg16",
}


def canonical(name: str) -> str:
    """``lenet5`` / ``LeNet_5`` / ``lenet-5`` -> ``lenet-5``; an unknown name is an InputError."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if key not in _ALIASES:
        raise InputError("unknown net %r (known: %s)" % (name, ", ".join(NAMES)))
    return _ALIASES[key]


def get(name: str) -> NetSpec:
    return NETS[canonical(name)]


# ---------------------------------------------------------------------------
# train_val: Data layer sources and batch sizes

def _is_test(layer) -> bool:
    pb = caffe_pb2()
    return any(r.HasField("phase") and r.phase == pb.TEST for r in layer.include)


def data_layers(net_param) -> Dict[str, object]:
    """The net's Data layers as {"train": layer, "test": layer} (a layer without a phase rule is "train")."""
    out: Dict[str, object] = {}
    for layer in net_param.layer:
        if layer.type == "Data":
            out.setdefault("test" if _is_test(layer) else "train", layer)
    return out


def _batch(value, what: str) -> Optional[int]:
    if value is None:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and value == int(value) and value >= 1
    if not ok:
        raise InputError("%s must be a positive integer, got %r" % (what, value))
    return int(value)


def exact_batch(n: int, preferred: int) -> int:
    """The largest batch <= ``preferred`` that divides ``n``.

    Caffe's Data layer wraps around at the end of its LMDB, so a test pass of
    ceil(n / b) batches counts some images twice, and a different set each
    time. With b dividing n, n / b batches cover every image exactly once
    and leave the reader back at the first record, so every model is scored
    on the same images in the same order.
    """
    n, preferred = int(n), max(1, int(preferred))
    if n < 1:
        raise InputError("an evaluation split needs at least one image, got %d" % n)
    for b in range(min(preferred, n), 0, -1):
        if n % b == 0:
            return b
    return 1


def train_val_with_sources(net: str, train_lmdb: str, test_lmdb: str, batch: Optional[int] = None,
                           test_batch: Optional[int] = None, n_test: Optional[int] = None):
    """The net's train_val NetParameter reading ``train_lmdb`` / ``test_lmdb`` (made absolute).

    ``batch`` / ``test_batch`` override the TRAIN / TEST Data layers' batch sizes.
    With ``n_test`` (the records in ``test_lmdb``) the TEST batch becomes the
    largest one up to that size which divides ``n_test`` (``exact_batch``).
    The LMDBs must exist: a typo should fail here, not minutes later inside Caffe.
    """
    spec = get(net)
    batch = _batch(batch, "batch")
    test_batch = _batch(test_batch, "test batch")
    for what, path in (("training", train_lmdb), ("test", test_lmdb)):
        if not os.path.isdir(path):
            raise InputError("no such %s LMDB: %s" % (what, path))
    param = load_net_proto(spec.train_val)
    layers = data_layers(param)
    if set(layers) != {"train", "test"}:
        raise InputError("%s needs one TRAIN and one TEST Data layer, found %s" % (spec.train_val, sorted(layers)))
    for layer in param.layer:
        if layer.type != "Data":
            continue
        test = _is_test(layer)
        layer.data_param.source = os.path.abspath(test_lmdb if test else train_lmdb)
        b = test_batch if test else batch
        if b is not None:
            layer.data_param.batch_size = b
        if test and n_test is not None:
            layer.data_param.batch_size = exact_batch(n_test, layer.data_param.batch_size)
    return param


def with_test_split(net_param, lmdb: str, n: int):
    """A copy of ``net_param`` whose TEST Data layer reads ``lmdb`` (``n`` records) in exact passes."""
    out = type(net_param)()
    out.CopyFrom(net_param)
    layer = data_layers(out).get("test")
    if layer is None:
        raise InputError("net %s has no TEST Data layer" % out.name)
    layer.data_param.source = os.path.abspath(lmdb)
    layer.data_param.batch_size = exact_batch(n, layer.data_param.batch_size)
    return out



# ---------------------------------------------------------------------------
# solvers

def set_solver_field(sp, key: str, value) -> None:
    """Set one SolverParameter field from a Python value (enums by name, repeated from a list)."""
    field = sp.DESCRIPTOR.fields_by_name.get(key)
    if field is None:
        raise InputError("a Caffe solver has no field %r" % key)
    if field.message_type is not None:
        raise InputError("solver field %r is a message; override it in the solver prototxt instead" % key)
    try:
        if field.enum_type is not None and isinstance(value, str):
            value = field.enum_type.values_by_name[value.upper()].number
        if field.label == field.LABEL_REPEATED:
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            del getattr(sp, key)[:]
            getattr(sp, key).extend(values)
        elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            setattr(sp, key, float(value))
        else:
            setattr(sp, key, value)
    except (TypeError, ValueError, KeyError) as e:
        raise InputError("bad value %r for solver field %r (%s)" % (value, key, e))


def solver_for(net: str, net_prototxt_path: str, snapshot_prefix: str, **overrides):
    """The net's reference solver (``solvers/``) training ``net_prototxt_path``, with field overrides.

    Overrides are SolverParameter fields: ``base_lr=0.001, max_iter=500,
    test_iter=100, test_interval=0, snapshot=0, display=20, random_seed=1``...
    ``None`` values are skipped, so callers can pass optional CLI flags through.
    Paths are made absolute because Caffe resolves them against its own cwd.
    """
    sp = load_solver_proto(get(net).solver)
    sp.net = os.path.abspath(net_prototxt_path)
    sp.snapshot_prefix = os.path.abspath(snapshot_prefix)
    for key, value in overrides.items():
        if value is not None:
            set_solver_field(sp, key, value)
    return sp



def for_data(net: str, info, split: str = "val"):
    """train_val for a ``datasets.DataInfo``: its LMDBs, and its batch / crop overrides if any.

    The TEST phase reads ``split``: "val" while training and choosing (the
    default), "test" only for the final figures. Its batch divides the
    split's size, so each test pass counts each image exactly once.
    """
    eval_lmdb, n_eval = info.split(split)
    param = train_val_with_sources(net, info.train_lmdb, eval_lmdb, getattr(info, "batch", None),
                                   getattr(info, "test_batch", None), n_test=n_eval)
    crop = getattr(info, "crop", None)
    if crop:
        for layer in data_layers(param).values():
            if layer.transform_param.crop_size:
                layer.transform_param.crop_size = int(crop)
    return param
