"""Check a user's net before Caffe builds it.

Caffe reports a bad net with a failed CHECK, which aborts the whole process
(exit 134, a GLOG dump, no Python exception to catch). The mistakes a user
can make in a prototxt that end that way are caught here first and raised as
one-line InputErrors: a layer type this Caffe does not have, a bottom that no
earlier layer produces, a top produced twice, ``num_output: 0``, a kernel or
stride of 0, legacy inputs without a shape, a data layer whose source is
missing (when the net is about to be built), and a data layer in a net that
must be a deploy net.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

from caffe_dc.base.errors import InputError
from caffe_dc.codec.net_shapes import included  # noqa: F401 (the phase rules; re-exported)

FILE_DATA_TYPES = ("Data", "ImageData", "HDF5Data", "WindowData")
_TRAIN, _TEST = 0, 1  # caffe_pb2.Phase values
_PHASE_NAMES = {_TRAIN: "TRAIN", _TEST: "TEST"}

_types = None


def layer_types():
    """The layer types registered in this pycaffe (its own list, not a copy of Caffe's)."""
    global _types
    if _types is None:
        # not solving.import_caffe: solving builds nets through this module, and imports stay one-way
        os.environ.setdefault("GLOG_minloglevel", "2")
        try:
            import caffe
        except ImportError as e:
            raise InputError("pycaffe is not importable here (%s); run caffe-dc through ./dc" % e)
        _types = frozenset(caffe.layer_type_list())
    return _types


def _source(layer) -> Optional[str]:
    return {"Data": lambda l: l.data_param.source, "ImageData": lambda l: l.image_data_param.source,
            "HDF5Data": lambda l: l.hdf5_data_param.source,
            "WindowData": lambda l: l.window_data_param.source}[layer.type](layer)


def _source_error(layer) -> Optional[str]:
    src = _source(layer)
    if not src:
        return "has no source"
    if layer.type == "Data":
        lmdb = layer.data_param.backend == layer.data_param.LMDB
        if lmdb and not os.path.isfile(os.path.join(src, "data.mdb")):
            return "reads %s, which is not an LMDB folder" % src
        if not lmdb and not os.path.isdir(src):
            return "reads %s, which is not a LevelDB folder" % src
    elif not os.path.isfile(src):
        return "reads %s, which does not exist" % src
    return None


def check_net(net, where: str, deploy: bool = False, build_phase: Optional[int] = None,
              caffe_types: bool = True) -> None:
    """Raise InputError for what would make Caffe abort on ``net`` (a NetParameter: pycaffe's, or
    ``codec.caffe_proto``'s, which has the same field names).

    ``deploy``: the net must take its input from ``input``/Input layers, not read a data set.
    ``build_phase``: the net is about to be built in this phase (0 TRAIN, 1 TEST), so the data
    layers of that phase must find their sources. ``caffe_types``: check the layer types against
    this pycaffe's list (importing Caffe, a second); the codec commands leave that to the child
    that builds the net, when one is built (``param_shapes``)."""
    v1 = not len(net.layer) and len(net.layers)
    layers = list(net.layers if v1 else net.layer)
    if not layers:
        raise InputError("%s has no layers" % where)
    if len(net.input) and len(net.input_shape) != len(net.input) and len(net.input_dim) != 4 * len(net.input):
        raise InputError("%s: its inputs %s need one input_shape each (or 4 input_dim each)"
                         % (where, ", ".join(net.input)))
    known = None if v1 or not caffe_types else layer_types()
    for layer in layers:
        name = layer.name or "(unnamed)"
        if known is not None and layer.type not in known:
            raise InputError("%s: layer %r has type %r, which this Caffe does not have" % (where, name, layer.type))
        ltype = layer.type if not v1 else None
        if ltype in ("Convolution", "Deconvolution") or (v1 and layer.HasField("convolution_param")):
            _check_conv(layer.convolution_param, where, name)
        if ltype == "Pooling" or (v1 and layer.HasField("pooling_param")):
            _check_pool(layer.pooling_param, where, name)
        if ltype == "InnerProduct" or (v1 and layer.HasField("inner_product_param")):
            if layer.inner_product_param.num_output < 1:
                raise InputError("%s: layer %r has num_output %d; it needs at least 1"
                                 % (where, name, layer.inner_product_param.num_output))
        if ltype in FILE_DATA_TYPES:
            if deploy:
                raise InputError("%s is a train/test net (layer %r reads a data set): give the deploy prototxt"
                                 % (where, name))
            if ltype == "Data" and layer.data_param.batch_size < 1:
                raise InputError("%s: data layer %r has batch_size %d" % (where, name, layer.data_param.batch_size))
    for phase in (_TRAIN, _TEST):
        tops = set(net.input)
        for layer in layers:
            if not included(layer, phase):
                continue
            name = layer.name or "(unnamed)"
            for b in layer.bottom:
                if b not in tops:
                    raise InputError("%s: layer %r takes bottom %r, which no earlier layer makes (%s phase)"
                                     % (where, name, b, _PHASE_NAMES[phase]))
            for t in layer.top:
                if t in tops and t not in layer.bottom:
                    raise InputError("%s: top %r is made twice, the second time by layer %r (%s phase)"
                                     % (where, t, name, _PHASE_NAMES[phase]))
            tops.update(layer.top)
            if phase == build_phase and not v1 and layer.type in FILE_DATA_TYPES:
                err = _source_error(layer)
                if err:
                    raise InputError("%s: data layer %r %s" % (where, name, err))


def _check_conv(cp, where: str, name: str) -> None:
    if cp.num_output < 1:
        raise InputError("%s: layer %r has num_output %d; it needs at least 1" % (where, name, cp.num_output))
    kernels = list(cp.kernel_size) + ([cp.kernel_h, cp.kernel_w] if cp.HasField("kernel_h") or cp.HasField("kernel_w")
                                      else [])
    if not kernels or min(kernels) < 1:
        raise InputError("%s: convolution %r needs a kernel_size of at least 1" % (where, name))
    strides = list(cp.stride) + ([cp.stride_h, cp.stride_w] if cp.HasField("stride_h") or cp.HasField("stride_w")
                                 else [])
    if strides and min(strides) < 1:
        raise InputError("%s: convolution %r has a stride of 0" % (where, name))
    if cp.group < 1 or cp.num_output % cp.group:
        raise InputError("%s: convolution %r: num_output %d is not a multiple of group %d"
                         % (where, name, cp.num_output, cp.group))


def _check_pool(pp, where: str, name: str) -> None:
    if pp.global_pooling:
        return
    kernels = [pp.kernel_size] if pp.HasField("kernel_size") else [pp.kernel_h, pp.kernel_w]
    if min(kernels) < 1:
        raise InputError("%s: pooling %r needs a kernel_size of at least 1" % (where, name))
    strides = [pp.stride] if not (pp.HasField("stride_h") or pp.HasField("stride_w")) else [pp.stride_h, pp.stride_w]
    if min(strides) < 1:
        raise InputError("%s: pooling %r has a stride of 0" % (where, name))


def net_shapes(net_param, phase: str = "TEST", where: Optional[str] = None, path: Optional[str] = None,
               caffe_types: bool = True) -> Dict[str, list]:
    """Blob shapes of every parameterised layer, as Caffe infers them, after ``check_net``.

    Caffe builds the net in a child process: whatever the checks above miss (shapes that do not
    fit together, say) makes the child abort, and that becomes one InputError here instead of
    the end of this process. ``path``: the prototxt ``net_param`` was read from, unchanged, for
    the child to read whole (``codec.caffe_proto``'s messages hold only a subset of Caffe's fields).
    The child checks the layer types itself, so ``caffe_types=False`` spares this process pycaffe."""
    import json
    import subprocess
    import sys
    import tempfile

    from google.protobuf import text_format

    where = where or "net %s" % (net_param.name or "(unnamed)")
    check_net(net_param, where, build_phase={"TRAIN": _TRAIN, "TEST": _TEST}[phase], caffe_types=caffe_types)
    tmp = None
    if path is None:
        fd, tmp = tempfile.mkstemp(suffix=".prototxt")
        with os.fdopen(fd, "w") as f:
            f.write(text_format.MessageToString(net_param))
    try:
        env = dict(os.environ, GLOG_minloglevel="2", GLOG_logtostderr="1")
        r = subprocess.run([sys.executable, "-c", _CHILD, path or tmp, phase], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, errors="replace", env=env)
    finally:
        if tmp:
            os.unlink(tmp)
    if r.returncode != 0:
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        ours = [l[len("caffe-dc: "):] for l in lines if l.startswith("caffe-dc: ")]
        if ours:
            raise InputError("%s: %s" % (where, ours[0]))
        why = [l.split("] ", 1)[-1] for l in lines if "Check failed" in l or l.startswith(("F", "E"))]
        msg = (why or lines or ["exit status %d" % r.returncode])[0]
        raise InputError("Caffe cannot build %s: %s" % (where, " ".join(msg.split())[:500]))
    return {k: [tuple(s) for s in v] for k, v in json.loads(r.stdout).items()}


# The child: parse as Caffe does, name a layer type this Caffe lacks, build, print the shapes.
_CHILD = """
import json, sys
import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format
caffe.set_mode_cpu()
net = caffe_pb2.NetParameter()
try:
    text_format.Merge(open(sys.argv[1], encoding="utf-8").read(), net)
except text_format.ParseError as e:
    sys.exit("caffe-dc: does not parse as a Caffe net: " + " ".join(str(e).split()))
known = set(caffe.layer_type_list())
for l in net.layer:
    if l.type not in known:
        sys.exit("caffe-dc: layer %r has type %r, which this Caffe does not have" % (l.name, l.type))
net = caffe.Net(sys.argv[1], getattr(caffe, sys.argv[2]))
print(json.dumps({name: [list(b.data.shape) for b in blobs] for name, blobs in net.params.items()}))
"""


def caffe_available() -> bool:
    """Whether pycaffe is installed, found without importing it (that takes a second)."""
    import importlib.util

    return importlib.util.find_spec("caffe") is not None


def param_shapes(net_param, where: str, path: Optional[str] = None, need_all: bool = True):
    """(shapes, unchecked) of a net's parameterised layers in the TEST phase.

    ``shapes``: {layer: [blob shapes]}; worked out from the prototxt (``codec.net_shapes``)
    where every layer's are simple, else from Caffe building the net once in a child process,
    where Caffe is installed and the net's data sources exist. ``unchecked``: {layer: why} for
    the layers left out (no Caffe here, or a data source missing); with ``need_all`` that is an
    InputError instead."""
    from caffe_dc.codec import net_shapes as own

    try:
        found = own.param_shapes(net_param, _TEST)
    except InputError as e:
        raise InputError("%s: %s" % (where, e))
    if not found.unknown:
        return dict(found.params), {}
    first = next(iter(found.unknown.items()))
    if caffe_available():
        try:
            check_net(net_param, where, build_phase=_TEST, caffe_types=False)
        except InputError:
            if need_all:
                raise
        else:
            return net_shapes(net_param, "TEST", where, path, caffe_types=False), {}
    if need_all:
        raise InputError("%s: the shapes of layer %r (%s) need Caffe to work out, and %s"
                         % (where, first[0], first[1], "pycaffe is not importable here" if not caffe_available()
                            else "the net cannot be built here"))
    return dict(found.params), dict(found.unknown)


def data_shapes(net_param, image_shape: Optional[Tuple[int, int, int]] = None) -> Dict[str, list]:
    """{layer: [blob shapes]} of a train_val's parameterised layers in the TEST phase.

    With ``image_shape`` (channels, height, width of every record) the Data layers are read as Input
    layers of that shape (cropped as their ``transform_param`` crops), so no LMDB is needed: a run
    checks its weights and sizes before it writes its data. Without it, Caffe builds the net itself
    from its LMDBs (``net_shapes``), e.g. for encoded images whose size only decoding tells."""
    if image_shape is None:
        return net_shapes(net_param, "TEST")
    net = type(net_param)()
    net.CopyFrom(net_param)
    c, h, w = (int(d) for d in image_shape)
    for layer in net.layer:
        if layer.type != "Data":
            continue
        crop = int(layer.transform_param.crop_size)
        batch = int(layer.data_param.batch_size) or 1
        tops = [(batch, c, crop or h, crop or w), (batch,)][:len(layer.top)]
        layer.type = "Input"
        layer.ClearField("data_param")
        layer.ClearField("transform_param")
        for dims in tops:
            layer.input_param.shape.add().dim.extend(dims)
    return param_shapes(net, "net %s" % (net.name or "(unnamed)"))[0]


def check_prototxt(path: str, deploy: bool = False):
    """Parse and check a user's prototxt; returns its NetParameter."""
    from caffe_dc.pycaffe.caffemodel import load_net_proto

    net = load_net_proto(path)
    check_net(net, path, deploy=deploy)
    return net
