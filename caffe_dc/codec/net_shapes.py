"""Parameter blob shapes of a net, worked out from its prototxt for the layer types whose shapes are simple.

Checking a caffemodel against its prototxt used to mean building the net in
Caffe (in a child process, since Caffe aborts on a bad net): about a second,
and impossible without Caffe. For the layers a deploy net is usually made of
(Input, Convolution, Deconvolution, InnerProduct, Pooling, BatchNorm, Scale,
Bias, Eltwise, Concat, Flatten, Split and the element-wise activations)
the shapes follow from the prototxt by Caffe's own rules, which are
reimplemented here. Anything else (a Data layer, whose shape is in its data
set; Reshape, Slice, PReLU...) makes ``param_shapes`` report the layers it
could not work out, and the caller falls back to Caffe where there is one.
The result is tested against Caffe's on the zoo's nets and on generated ones.
"""
from __future__ import annotations

import collections
from typing import Dict, List, Optional, Tuple

from caffe_dc.base.errors import InputError
from caffe_dc.codec.caffe_proto import layer_type

TRAIN, TEST = 0, 1   # Caffe's Phase values

# Types whose top has the shape of their (first) bottom.
SAME_SHAPE = frozenset(["ReLU", "Sigmoid", "TanH", "Dropout", "LRN", "BatchNorm", "Scale", "Bias", "AbsVal",
                        "Power", "Exp", "Log", "BNLL", "ELU", "Threshold", "Softmax", "MVN", "Eltwise"])
# Types with no top another layer could read that would carry a shape we need.
SINKS = frozenset(["Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
                   "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "Silence"])
# Types Caffe gives no parameter blobs: when their shapes cannot be worked out, nothing goes unchecked.
PARAM_FREE = (SAME_SHAPE - {"BatchNorm", "Scale", "Bias"}) | SINKS | frozenset(
    ["Input", "Pooling", "Concat", "Flatten", "Split", "Data", "ImageData", "HDF5Data", "WindowData",
     "MemoryData", "DummyData", "Reshape", "Slice", "Crop", "ArgMax", "Im2col", "HDF5Output"])


def _meets(rule, phase: int) -> bool:
    """Caffe's NetState rule for the default state of ``phase``: level 0, no stages."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    return not len(rule.stage)  # a required stage is never set


def included(layer, phase: int) -> bool:
    """Whether Caffe builds ``layer`` in ``phase`` (include/exclude rules)."""
    if len(layer.include):
        return any(_meets(r, phase) for r in layer.include)
    return not any(_meets(r, phase) for r in layer.exclude)


class Shapes(collections.namedtuple("Shapes", "params unknown")):
    """``params``: {layer: [blob shapes]} for the parameterised layers worked out, in net order;
    ``unknown``: {layer: why} for the layers whose shapes need Caffe (empty when all were)."""


def _net_inputs(net) -> Dict[str, Optional[tuple]]:
    tops = {}
    for i, name in enumerate(net.input):
        if len(net.input_shape) > i:
            tops[name] = tuple(int(d) for d in net.input_shape[i].dim)
        elif len(net.input_dim) >= 4 * (i + 1):
            tops[name] = tuple(int(d) for d in net.input_dim[4 * i:4 * i + 4])
        else:
            tops[name] = None
    return tops


def param_shapes(net, phase: int = TEST) -> Shapes:
    """Each parameterised layer's blob shapes in ``phase``, as Caffe would make them."""
    blobs = _net_inputs(net)
    params, unknown = collections.OrderedDict(), collections.OrderedDict()
    layers = net.layer if len(net.layer) or not len(net.layers) else net.layers
    for layer in layers:
        if not included(layer, phase):
            continue
        ltype = layer_type(layer)
        bottoms = [blobs.get(b) for b in layer.bottom]
        try:
            if any(b is None for b in bottoms):
                raise _Unknown("an input shape is not known")
            tops, own = _layer_shapes(layer, ltype, bottoms)
        except _Unknown as e:
            tops, own = [None] * len(layer.top), None
            if ltype not in PARAM_FREE:
                unknown[layer.name] = "a %s layer: %s" % (ltype, e)
        if own:
            params[layer.name] = own
        for t, s in zip(layer.top, tops):
            blobs[t] = s
    return Shapes(params, unknown)


class _Unknown(Exception):
    pass


def _axis(axis: int, ndim: int, what: str) -> int:
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < max(ndim, 1):
        raise InputError("%s: axis %d is out of range for a %d-axis input" % (what, axis, ndim))
    return a


def _layer_shapes(layer, ltype: str, bottoms: List[tuple]) -> Tuple[list, Optional[list]]:
    """(top shapes, parameter blob shapes or None) of one layer; _Unknown for a type not modelled."""
    what = "layer %r" % layer.name
    if ltype == "Input":
        shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
        if len(shapes) not in (1, len(layer.top)):
            raise InputError("%s: %d input shapes for %d tops" % (what, len(shapes), len(layer.top)))
        return [shapes[0] if len(shapes) == 1 else s for s in (shapes * len(layer.top))[:len(layer.top)]], None
    if ltype in SINKS:
        return [()] * len(layer.top), None
    if not bottoms:
        raise _Unknown("it has no bottom")
    b0 = bottoms[0]
    if ltype in ("Convolution", "Deconvolution"):
        return _conv(layer.convolution_param, ltype, b0, what)
    if ltype == "InnerProduct":
        ip = layer.inner_product_param
        a = _axis(ip.axis, len(b0), what)
        k = 1
        for d in b0[a:]:
            k *= d
        n = int(ip.num_output)
        own = [(k, n) if ip.transpose else (n, k)] + ([(n,)] if ip.bias_term else [])
        return [b0[:a] + (n,)], own
    if ltype == "Pooling":
        return [_pool(layer.pooling_param, b0, what)], None
    if ltype == "BatchNorm":
        c = b0[1] if len(b0) > 1 else 1
        return [b0], [(c,), (c,), (1,)]
    if ltype in ("Scale", "Bias"):
        p = layer.scale_param if ltype == "Scale" else layer.bias_param
        if len(bottoms) > 1:   # the scale (or bias) comes from the second bottom
            if ltype == "Scale" and p.bias_term:
                raise _Unknown("a two-bottom Scale with a bias is not modelled here")
            return [b0], None
        a = _axis(p.axis, len(b0), what)
        shape = b0[a:] if p.num_axes == -1 else b0[a:a + p.num_axes]
        own = [shape] + ([shape] if ltype == "Scale" and p.bias_term else [])
        return [b0], own
    if ltype == "Eltwise" and any(b != b0 for b in bottoms):   # Caffe aborts on this
        raise InputError("Caffe cannot build %s: Eltwise inputs of different shapes %s" % (what, " and ".join(map(str, bottoms))))
    if ltype in SAME_SHAPE or ltype == "Split":
        return [b0] * len(layer.top), None
    if ltype == "Concat":
        cp = layer.concat_param
        a = _axis(cp.concat_dim if cp.HasField("concat_dim") else cp.axis, len(b0), what)
        if any(len(b) != len(b0) or b[:a] + b[a + 1:] != b0[:a] + b0[a + 1:] for b in bottoms):
            raise InputError("Caffe cannot build %s: Concat inputs %s differ outside axis %d" % (what, " and ".join(map(str, bottoms)), a))
        return [b0[:a] + (sum(b[a] for b in bottoms),) + b0[a + 1:]], None
    if ltype == "Flatten":
        fp = layer.flatten_param
        a, e = _axis(fp.axis, len(b0), what), _axis(fp.end_axis, len(b0), what)
        k = 1
        for d in b0[a:e + 1]:
            k *= d
        return [b0[:a] + (k,) + b0[e + 1:]], None
    raise _Unknown("not modelled here")


def _dims(repeated, h, w, has_hw: bool, n: int, default: int, what: str, name: str) -> list:
    if has_hw:
        return [int(h), int(w)]
    v = [int(x) for x in repeated]
    if not v:
        return [default] * n
    if len(v) not in (1, n):
        raise InputError("%s: %d %s values for %d spatial axes" % (what, len(v), name, n))
    return v * n if len(v) == 1 else v


def _conv(cp, ltype: str, b0: tuple, what: str):
    a = _axis(cp.axis, len(b0), what)
    spatial = list(b0[a + 1:])
    n = len(spatial)
    k = _dims(cp.kernel_size, cp.kernel_h, cp.kernel_w, cp.HasField("kernel_h"), n, 0, what, "kernel_size")
    s = _dims(cp.stride, cp.stride_h, cp.stride_w, cp.HasField("stride_h"), n, 1, what, "stride")
    p = _dims(cp.pad, cp.pad_h, cp.pad_w, cp.HasField("pad_h"), n, 0, what, "pad")
    d = _dims(cp.dilation, 0, 0, False, n, 1, what, "dilation")
    c_in, c_out, g = b0[a], int(cp.num_output), int(cp.group)
    if c_in % g:
        raise InputError("%s: %d input channels are not a multiple of group %d" % (what, c_in, g))
    out = []
    for i in range(n):
        ext = d[i] * (k[i] - 1) + 1
        o = (spatial[i] + 2 * p[i] - ext) // s[i] + 1 if ltype == "Convolution" \
            else s[i] * (spatial[i] - 1) + ext - 2 * p[i]
        if o < 1:
            raise InputError("Caffe cannot build %s: its kernel does not fit its %s input" % (what, "x".join(map(str, b0[a + 1:]))))
        out.append(o)
    w = (c_out, c_in // g) if ltype == "Convolution" else (c_in, c_out // g)
    own = [w + tuple(k)] + ([(c_out,)] if cp.bias_term else [])
    return [b0[:a] + (c_out,) + tuple(out)], own


def _pool(pp, b0: tuple, what: str) -> tuple:
    if len(b0) != 4:
        raise InputError("%s: pooling needs a 4-axis input, not %s" % (what, b0))
    h, w = b0[2], b0[3]
    if pp.global_pooling:
        return b0[:2] + (1, 1)
    k = [pp.kernel_size] * 2 if pp.HasField("kernel_size") else [pp.kernel_h, pp.kernel_w]
    s = [pp.stride_h, pp.stride_w] if pp.HasField("stride_h") or pp.HasField("stride_w") else [pp.stride] * 2
    p = [pp.pad_h, pp.pad_w] if pp.HasField("pad_h") or pp.HasField("pad_w") else [pp.pad] * 2
    out = []
    for size, ki, si, pi in zip((h, w), k, s, p):
        if pi >= ki:   # Caffe checks these, aborting
            raise InputError("Caffe cannot build %s: pooling pad %d is not smaller than its kernel %d" % (what, pi, ki))
        o = -(-(size + 2 * pi - ki) // si) + 1        # Caffe rounds up
        if pi and (o - 1) * si >= size + pi:          # ... but the last window must start inside the image
            o -= 1
        if o < 1:
            raise InputError("Caffe cannot build %s: its kernel does not fit its %dx%d input" % (what, h, w))
        out.append(o)
    return b0[:2] + tuple(out)


def check_params(shapes: Dict[str, list], params, where: str) -> None:
    """Refuse a caffemodel whose blobs are not those ``shapes`` (a net's) asks for, as Caffe would."""
    for name, shp in shapes.items():
        if name not in params:
            raise InputError("%s: the net's layer %r has no weights in the caffemodel" % (where, name))
        got = [tuple(b.shape) for b in params[name].blobs]
        if [tuple(s) for s in shp] != got[: len(shp)] or len(got) != len(shp):
            raise InputError("%s: layer %r has blobs %s in the caffemodel but %s in the prototxt"
                             % (where, name, got, [tuple(s) for s in shp]))
