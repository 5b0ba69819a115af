"""The nets caffe-dc compresses: the paper's four (where their prototxts and solvers live, and how
to fill them in), and any user's own, both as a ``NetSource`` that every stage reads.

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
from typing import Dict, List, Optional, Tuple

from caffe_dc.pycaffe.caffemodel import caffe_pb2, load_net_proto, load_solver_proto
from caffe_dc.pycaffe.rewrite import check_unshared, prunable_layers, set_solver_field  # noqa: F401 (re-exported)
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


def accuracy_layers(net_param) -> List[Tuple[str, str, str, int]]:
    """(name, scores blob, label blob, top_k) of every Accuracy layer that runs in the TEST phase."""
    pb = caffe_pb2()
    out = []
    for layer in net_param.layer:
        if layer.type != "Accuracy" or len(layer.bottom) < 2:
            continue
        if any(r.HasField("phase") and r.phase != pb.TEST for r in layer.include):
            continue
        out.append((layer.name, layer.bottom[0], layer.bottom[1], int(layer.accuracy_param.top_k or 1)))
    return out


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
                           test_batch: Optional[int] = None, n_test: Optional[int] = None, planned: bool = False):
    """The net's train_val NetParameter reading ``train_lmdb`` / ``test_lmdb`` (made absolute).

    ``batch`` / ``test_batch`` override the TRAIN / TEST Data layers' batch sizes.
    With ``n_test`` (the records in ``test_lmdb``) the TEST batch becomes the
    largest one up to that size which divides ``n_test`` (``exact_batch``).
    The LMDBs must exist (a typo should fail here, not minutes later inside Caffe), unless they are
    ``planned``: a ``datasets.DataPlan`` checked them and writes them once the whole run is checked.
    """
    spec = get(net)
    batch = _batch(batch, "batch")
    test_batch = _batch(test_batch, "test batch")
    for what, path in (("training", train_lmdb), ("test", test_lmdb)):
        if not planned and not os.path.isdir(path):
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

def solver_for(net: str, net_prototxt_path: str, snapshot_prefix: str, **overrides):
    """The net's reference solver (``solvers/``) training ``net_prototxt_path``, with field overrides.

    Overrides are SolverParameter fields: ``base_lr=0.001, max_iter=500,
    test_iter=100, test_interval=0, snapshot=0, display=20, random_seed=1``...
    ``None`` values are skipped, so callers can pass optional CLI flags through.
    Paths are made absolute because Caffe resolves them against its own cwd.
    """
    return solver_with(load_solver_proto(get(net).solver), net_prototxt_path, snapshot_prefix, **overrides)


def solver_with(solver_param, net_prototxt_path: str, snapshot_prefix: str, **overrides):
    """A copy of ``solver_param`` training ``net_prototxt_path`` (absolute paths), with field overrides."""
    sp = type(solver_param)()
    sp.CopyFrom(solver_param)
    sp.net = os.path.abspath(net_prototxt_path)
    sp.snapshot_prefix = os.path.abspath(snapshot_prefix)
    for key, value in overrides.items():
        if value is not None:
            set_solver_field(sp, key, value)
    return sp



def for_data(net: str, info, split: str = "val", planned: bool = False):
    """train_val for a ``datasets.DataInfo``: its LMDBs, and its batch / crop overrides if any.

    The TEST phase reads ``split``: "val" while training and choosing (the
    default), "test" only for the final figures. Its batch divides the
    split's size, so each test pass counts each image exactly once.
    """
    eval_lmdb, n_eval = info.split(split)
    param = train_val_with_sources(net, info.train_lmdb, eval_lmdb, getattr(info, "batch", None),
                                   getattr(info, "test_batch", None), n_test=n_eval, planned=planned)
    crop = getattr(info, "crop", None)
    if crop:
        for layer in data_layers(param).values():
            if layer.transform_param.crop_size:
                layer.transform_param.crop_size = int(crop)
    return param


# ---------------------------------------------------------------------------
# net sources: what every compression stage needs to know about a net

INPUT_TYPES = ("Data", "ImageData", "HDF5Data", "Input", "MemoryData", "DummyData", "WindowData", "Python")


@dataclass(frozen=True)
class NetSource:
    """A net to compress, the paper's or a user's: the one thing every stage reads.

    ``train_val``'s TRAIN Data layer reads the training split and its TEST
    Data layer the validation split (every choice is made on it), with a
    TEST batch that divides it; ``test_net`` is the same net reading the
    test split, for the final figures. ``solver`` is the solver as its
    author wrote it: stages copy it and change only what retraining needs.
    ``paper`` says whether the paper's tables describe this net.
    """

    name: str
    train_val: object
    test_net: object
    solver: object
    info: object                  # datasets.DataInfo: the splits' LMDBs and sizes
    paper: bool = False
    origin: Tuple[Tuple[str, str], ...] = ()   # (what, path) the net came from, for the report
    changes: Tuple[str, ...] = ()              # what was changed in the user's net to run it

    @property
    def file_stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name) or "net"

    def solver_for(self, net_prototxt_path: str, snapshot_prefix: str, **overrides):
        """A copy of the solver training ``net_prototxt_path`` (absolute paths), with field overrides."""
        return solver_with(self.solver, net_prototxt_path, snapshot_prefix, **overrides)

    def layer_types(self) -> Dict[str, str]:
        """{prunable layer: Caffe type}, in net order."""
        types = {l.name: l.type for l in self.train_val.layer}
        return {n: types[n] for n in prunable_layers(self.train_val)}


def registry_source(net: str, info, planned: bool = False) -> NetSource:
    """One of the paper's nets on a ``datasets.DataInfo`` (its LMDBs and overrides; ``planned``: see
    ``train_val_with_sources``)."""
    spec = get(net)
    return NetSource(spec.name, for_data(spec.name, info, "val", planned), for_data(spec.name, info, "test", planned),
                     load_solver_proto(spec.solver), info, paper=True,
                     origin=(("train_val", spec.train_val), ("solver", spec.solver)))


def source(net, info) -> NetSource:
    """``net`` itself when it is a NetSource, else the registry net of that name on ``info``."""
    return net if isinstance(net, NetSource) else registry_source(net, info)


def _existing(path: str, *bases: str) -> str:
    """``path`` made absolute: as Caffe reads it (against the working folder), else against ``bases``."""
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    for b in bases:
        cand = os.path.join(b, path)
        if os.path.exists(cand):
            return os.path.abspath(cand)
    return os.path.abspath(path)


def user_source(solver_path: str, test_lmdb: Optional[str] = None) -> NetSource:
    """A user's own net, from the solver that trained it (its ``net:`` names the train_val).

    The train_val must read LMDBs through one TRAIN and one TEST ``Data`` layer
    and score with a TEST-phase Accuracy layer. TRAIN's source is the training
    split, TEST's the validation split; ``test_lmdb``, if given, is the
    held-out test split (else the test figures are read on TEST's source, and
    the report says so). Layers sharing weights through ``param { name }``
    are refused. Raises a one-line InputError for anything else it cannot run.
    """
    from caffe_dc.pycaffe import datasets
    sp = load_solver_proto(solver_path)
    param, where, tv_path = _user_train_val(sp, solver_path)
    sources = _data_sources(param, where, os.path.dirname(tv_path), os.path.dirname(os.path.abspath(solver_path)))
    n_train = datasets.lmdb_entries(sources["train"])
    n_val = datasets.lmdb_entries(sources["test"])
    n_test = None
    if test_lmdb is not None:
        test_lmdb = os.path.abspath(test_lmdb)
        n_test = datasets.lmdb_entries(test_lmdb)
    check_unshared(param, where)
    changes = _standard_accuracy_tops(param, where)
    val, test = _split_nets(param, n_val, test_lmdb, n_test, changes)
    data_dir = os.path.dirname(sources["train"])
    name = os.path.basename(data_dir) or os.path.basename(sources["train"])
    # Without a held-out test LMDB there is no separate validation split: val falls back to the
    # TEST source (DataInfo.split), as for ImageNet's val LMDB.
    info = datasets.DataInfo(name, sources["train"], test_lmdb or sources["test"], n_train,
                             n_test if test_lmdb else n_val, val_lmdb=sources["test"] if test_lmdb else None,
                             n_val=n_val if test_lmdb else None, source=data_dir)
    net_name = param.name or os.path.splitext(os.path.basename(tv_path))[0]
    return NetSource(net_name, val, test, sp, info, paper=False,
                     origin=(("solver", os.path.abspath(solver_path)), ("train_val", tv_path)), changes=tuple(changes))


def _user_train_val(sp, solver_path: str):
    """(train_val, where it was read, its path) of a user's solver: its ``net:`` file or inline ``net_param``
    (then moved out of the solver, which the stages give a net file of their own)."""
    if sp.train_net or sp.test_net or sp.HasField("train_net_param") or len(sp.test_net_param):
        raise InputError("%s: give the net as one train_val with `net:` (train_net/test_net pairs are not supported)"
                         % solver_path)
    if sp.HasField("net_param"):
        param = type(sp.net_param)()
        param.CopyFrom(sp.net_param)
        sp.ClearField("net_param")
        return param, solver_path, solver_path
    if sp.net:
        tv_path = _existing(sp.net, os.path.dirname(os.path.abspath(solver_path)))
        return load_net_proto(tv_path), tv_path, tv_path
    raise InputError("%s names no net (`net: \"train_val.prototxt\"`)" % solver_path)


def _data_sources(param, where: str, tdir: str, sdir: str) -> Dict[str, str]:
    """{"train", "test"}: the LMDB each phase's one Data layer reads, made absolute in ``param`` (as is a
    mean file), relative paths resolved beside the train_val, then the solver."""
    lmdb = caffe_pb2().DataParameter.LMDB
    counts = {"train": [], "test": []}
    for layer in param.layer:
        if layer.type == "Data":
            counts["test" if _is_test(layer) else "train"].append(layer)
    if not counts["train"] and not counts["test"]:
        others = sorted({l.type for l in param.layer if l.type in INPUT_TYPES})
        raise InputError("%s has no Data layers%s: caffe-dc reads the training split from a TRAIN-phase Data layer "
                         "and the validation split from a TEST-phase one (LMDB)"
                         % (where, " (it reads its input through %s)" % "/".join(others) if others else ""))
    for phase in ("train", "test"):
        if len(counts[phase]) != 1:
            raise InputError("%s needs exactly one %s-phase Data layer, found %d" % (where, phase.upper(),
                                                                                     len(counts[phase])))
    sources = {}
    for phase, (layer,) in counts.items():
        dp = layer.data_param
        if dp.backend != lmdb:
            raise InputError("%s: Data layer %r reads a LEVELDB; caffe-dc reads LMDBs (`backend: LMDB`)"
                             % (where, layer.name))
        if not dp.source:
            raise InputError("%s: Data layer %r has no source" % (where, layer.name))
        dp.source = _existing(dp.source, tdir, sdir)
        sources[phase] = dp.source
        if layer.transform_param.mean_file:
            layer.transform_param.mean_file = _existing(layer.transform_param.mean_file, tdir, sdir)
    return sources


def _standard_accuracy_tops(param, where: str) -> List[str]:
    """Rename the Accuracy tops to Caffe's usual names, which the stages read (the tops are outputs, so
    renaming them changes no number); the changes made, as the report lists them."""
    acc = [a for a in accuracy_layers(param) if a[3] == 1]
    if not acc:
        raise InputError("%s has no TEST-phase Accuracy layer (top_k 1) to score the models with" % where)
    changes = []
    for layer in param.layer:
        if layer.type == "Accuracy" and layer.top and layer.name in [a[0] for a in accuracy_layers(param)]:
            k = int(layer.accuracy_param.top_k or 1)
            want = "accuracy" if k == 1 else "accuracy_top%d" % k
            if layer.top[0] != want and not any(want in (l.top) for l in param.layer):
                changes.append("Accuracy layer %r's top %r read as %r" % (layer.name, layer.top[0], want))
                layer.top[0] = want
    return changes


def _split_nets(param, n_val: int, test_lmdb: Optional[str], n_test: Optional[int], changes: List[str]):
    """(validation net, test net): ``param`` with its TEST Data layer on each split, its batch made to divide
    the split's size so that each image counts once (the change appended to ``changes``)."""
    batch = int(data_layers(param)["test"].data_param.batch_size)
    val = type(param)()
    val.CopyFrom(param)
    data_layers(val)["test"].data_param.batch_size = exact_batch(n_val, batch)
    if test_lmdb is None:
        test = val
    else:
        test = type(param)()
        test.CopyFrom(param)
        tl = data_layers(test)["test"]
        tl.data_param.source = test_lmdb
        tl.data_param.batch_size = exact_batch(n_test, batch)
    for what, net_param, n in (("validation", val, n_val), ("test", test, n_test if test_lmdb else n_val)):
        b = data_layers(net_param)["test"].data_param.batch_size
        if b != batch:
            changes.append("TEST batch %d -> %d on the %s split, so that it divides its %d images "
                           "(each counted once)" % (batch, b, what, n))
    return val, test


def solver_changes(before, after) -> List[str]:
    """What a retraining solver changed in the user's: "field: old -> new" for every field that differs."""
    def fields(sp):
        return {f.name: v for f, v in sp.ListFields()}

    a, b = fields(before), fields(after)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        out.append("%s: %s -> %s" % (key, _show(a.get(key)), _show(b.get(key))))
    return out


def _show(v) -> str:
    """A solver value as a person reads it: float32 fields at 6 digits (0.001, not 0.0010000000474974513)."""
    if v is None:
        return "unset"
    if hasattr(v, "extend"):
        return "[%s]" % ", ".join(_show(x) for x in v)
    return "%.6g" % v if isinstance(v, float) else repr(v)
