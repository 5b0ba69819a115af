"""The authors' ``.net`` files against a deploy prototxt: import to a caffemodel, export from one.

The byte format itself is ``codec.han_net``; this module adds the deploy
net's layer shapes (worked out from the prototxt by ``codec.net_shapes``,
or by Caffe for layer types that needs) and caffemodel I/O. Neither needs
pycaffe for the usual deploy nets.
"""
from __future__ import annotations

import collections
import os
from typing import Dict, List, Tuple

import numpy as np

from caffe_dc.base.blobs import CODEBOOK, CODES, blob_name
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import atomic_write, require_file
from caffe_dc.base.params import LayerParams
from caffe_dc.codec.caffe_proto import layer_type, load_net_text
from caffe_dc.codec.caffemodel import load_params
from caffe_dc.codec.han_net import code_bits, codebook_for, is_selected, read_net, write_net
from caffe_dc.pycaffe import validate

def deploy_layers(deploy_prototxt: str) -> "collections.OrderedDict[str, Tuple[str, List[tuple]]]":
    """{name: (type, [blob shapes])} of the deploy net's parameterised layers, in net order.

    Shapes come from the prototxt where its layers' are simple, else from
    Caffe building the net (``validate.param_shapes``). Every parameterised layer must be one the format stores,
    with a weight and at most a bias; otherwise the file could not describe
    the whole net, and a caffemodel missing a layer would run with Caffe's
    random fillers.
    """

    net_param = load_net_text(deploy_prototxt)
    shapes, _ = validate.param_shapes(net_param, deploy_prototxt, deploy_prototxt)
    types = {l.name: layer_type(l) for l in (net_param.layer or net_param.layers)}
    out = collections.OrderedDict()
    for name, blobs in shapes.items():
        if not is_selected(name):
            raise InputError("layer %s of %s has parameters but no conv, fc or ip in its name: "
                             "the .net format cannot store it" % (name, deploy_prototxt))
        if len(blobs) > 2:
            raise InputError("layer %s has %d parameter blobs; the .net format stores a weight and a bias"
                             % (name, len(blobs)))
        out[name] = (types.get(name, ""), [tuple(s) for s in blobs])
    if not out:
        raise InputError("%s has no layers with parameters" % deploy_prototxt)
    return out


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def import_net(deploy_prototxt: str, net_path: str, codebooks: bool = False):
    """Decode a ``.net`` file into caffemodel Params (weights and biases shaped as the deploy net).

    Save with ``caffemodel.save_params(params, out)``; ``caffe test`` with the
    deploy (or a train_val with the same layers) then runs the compressed net.
    With ``codebooks``, each stored layer ``L`` also gets ``L_codebook`` (the
    file's codebook, in its own order) and ``L_codes`` blobs, as ``caffe-dc
    quantize`` writes them: ``export_net`` then writes the same bytes back,
    and ``caffe-dc encode`` stores the layers with those codebooks. Caffe
    ignores the extra layers.
    """

    layers = deploy_layers(deploy_prototxt)
    require_file(net_path, ".net file")
    with open(net_path, "rb") as f:
        data = f.read()
    spec = [(n, _size(s[0]), _size(s[1]) if len(s) > 1 else 0) for n, (t, s) in layers.items()]
    decoded = read_net(data, spec)
    params = collections.OrderedDict()
    for hl in decoded:
        ltype, shapes = layers[hl.name]
        blobs = [hl.weights.reshape(shapes[0])]
        if len(shapes) > 1:
            blobs.append(hl.bias.reshape(shapes[1]))
        params[hl.name] = LayerParams(ltype, blobs)
    if codebooks:
        for hl in decoded:
            params[blob_name(hl.name, CODEBOOK)] = LayerParams("Parameter", [hl.codebook])
            params[blob_name(hl.name, CODES)] = LayerParams(
                "Parameter", [hl.codes.reshape(layers[hl.name][1][0]).astype(np.float32)])
    return params


def _own_codebook(params, name: str, w: np.ndarray):
    """(codebook, codes) from the layer's ``L_codebook``/``L_codes`` blobs, if they fit the format
    (2**bits entries, 0.0 only first, whole codes in range) and give its weights bit for bit; else None."""
    cb_l, codes_l = params.get(blob_name(name, CODEBOOK)), params.get(blob_name(name, CODES))
    if cb_l is None or codes_l is None or not cb_l.blobs or not codes_l.blobs:
        return None
    cb = np.asarray(cb_l.blobs[0], dtype=np.float32).ravel()
    codes = np.asarray(codes_l.blobs[0]).ravel()
    if cb.size != 1 << code_bits(name) or cb[0] != 0.0 or np.count_nonzero(cb[1:] == 0.0) or codes.size != w.size:
        return None
    if not (np.isfinite(cb).all() and np.array_equal(codes, np.floor(codes))
            and (codes.size == 0 or 0 <= codes.min() and codes.max() < cb.size)):
        return None
    codes = codes.astype(np.uint8)
    if not np.array_equal(cb[codes].view(np.uint32), np.ascontiguousarray(w, dtype=np.float32).ravel().view(np.uint32)):
        return None   # stale: the weights moved since (a fine-tuning outside caffe-dc)
    return cb, codes


def export_net(deploy_prototxt: str, caffemodel: str, out_path: str) -> Dict[str, object]:
    """Write a quantized caffemodel as a ``.net`` file (atomically); returns a size summary.

    Each stored layer must have at most 2**bits distinct values counting
    0.0 (256 for conv, 16 otherwise), i.e. be quantized with 8 / 4 bits.
    A layer's own ``L_codebook``/``L_codes`` blobs (``import_net`` with
    ``codebooks``, ``caffe-dc quantize``) give its codebook, in their order,
    when they fit the format and reproduce its weights exactly: an imported
    ``.net`` file then exports byte for byte (the authors' codebooks are not
    sorted). Otherwise the codebook is built from the weights
    (``han_net.codebook_for``: ascending). Other blobs are ignored, since the
    layer list comes from the deploy net.
    """

    paths = {os.path.abspath(p) for p in (deploy_prototxt, caffemodel)}
    if os.path.abspath(out_path) in paths:
        raise InputError("refusing to overwrite an input: %s" % out_path)
    layers = deploy_layers(deploy_prototxt)
    params = load_params(caffemodel)
    todo = []
    summary = {"layers": []}
    for name, (ltype, shapes) in layers.items():
        if name not in params:
            raise InputError("%s has no weights for the deploy net's layer %s" % (caffemodel, name))
        blobs = params[name].blobs
        got = [tuple(b.shape) for b in blobs[:len(shapes)]]
        if len(blobs) < len(shapes) or [_size(s) for s in got] != [_size(s) for s in shapes]:
            raise InputError("layer %s has blobs %s in %s but %s in %s"
                             % (name, got, caffemodel, shapes, deploy_prototxt))
        codebook, codes = _own_codebook(params, name, blobs[0]) or codebook_for(name, blobs[0])
        bias = blobs[1] if len(shapes) > 1 else np.zeros(0, np.float32)
        todo.append((name, codebook, codes, bias))
    data = write_net(todo)
    counts = np.frombuffer(data, dtype="<u4", count=len(todo))
    for (name, codebook, codes, bias), n in zip(todo, counts):
        kept = int(np.count_nonzero(codes))
        summary["layers"].append({"name": name, "code_bits": code_bits(name), "weights": int(codes.size),
                                  "kept": kept, "entries": int(n), "fillers": int(n) - kept})
    atomic_write(out_path, data)
    summary["bytes"] = len(data)
    summary["dense_bytes"] = 4 * sum(_size(s) for _, shp in layers.values() for s in shp)
    return summary
