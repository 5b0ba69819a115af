"""The ``.dcz`` front end, numpy alone: quantized params <-> compressed bytes, and post-hoc compression.

A model that went through ``caffe-dc quantize`` carries its codebooks and
codes (``L_codebook`` / ``L_codes`` blobs) and is encoded as it is. Any
other caffemodel is pruned and quantized *post hoc* (magnitude pruning to
the given densities, k-means with the given bits, no retraining) so that
every caffemodel can be converted; the accuracy cost of skipping retraining
is the user's to measure.
"""
from __future__ import annotations

import enum
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

from caffe_dc.codec import model as codec
from caffe_dc.base import paper
from caffe_dc.algorithms import prune_rules
from caffe_dc.algorithms import quantization
from caffe_dc.base import layer_policy
from caffe_dc.base.blobs import CODEBOOK, blob_name, is_helper
from caffe_dc.base.params import Params
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import require_file


class IndexWidth(enum.Enum):
    """How wide a layer's relative-index field is, when no number of bits is given.

    AUTO
        The width, 0 (dense) to 12 bits, whose record is the smallest, Huffman
        coding included (``container.choose_index_bits``). The default.
    PAPER
        The paper's tables: 5 bits for LeNet and VGG-16, 4 for AlexNet; any
        other net section 2's 8 bits for conv layers, 5 for fc
        (``layer_policy.paper_index_bits``). Reproduces the paper's storage figures.
    """
    AUTO = "auto"
    PAPER = "paper"


IndexBits = Union[int, IndexWidth, None]   # a width in bits (0: dense), or how to choose it; None: AUTO


def resolve_index_bits(value: IndexBits, net: Optional[str], layer_type: str) -> Optional[int]:
    """A layer's width for the codec: bits as given, PAPER's for this net and layer type, None for AUTO."""
    if value is None or value is IndexWidth.AUTO:
        return None
    if value is IndexWidth.PAPER:
        return layer_policy.paper_index_bits(layer_type, net)
    return int(value)


def guess_net(params: Params) -> Optional[str]:
    """Which of the paper's nets this is, by its compressible layers' names and sizes."""
    for net in paper.NETS:
        rows = paper.layer_rows(net)
        names = [r.layer for r in rows]
        if all(n in params for n in names):
            sizes_ok = all(abs(params[r.layer].blobs[0].size - r.weights) <= _label_tolerance(r.weights_label)
                           for r in rows)
            if sizes_ok:
                return net
    return None


def _label_tolerance(label: str) -> float:
    """Half a unit of the paper's printed rounding ("1M" -> 500K, "0.5K" -> 50), plus 2% for loose rounding."""
    mult = {"K": 1e3, "M": 1e6}[label[-1]]
    digits = label[:-1]
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return 0.5 * mult * 10 ** -decimals + 0.02 * float(digits) * mult


def compressible(params: Params) -> list:
    return [n for n, lp in params.items() if layer_policy.is_prunable(lp.type) and not is_helper(n)]


def post_hoc(params: Params, net: Optional[str], density: Optional[Mapping[str, float]] = None,
             bits: Optional[Mapping[str, int]] = None, init=quantization.Init.LINEAR, seed: int = 0,
             rule: str = prune_rules.DEFAULT) -> Params:
    """Prune (``rule``, magnitude by default, to per-layer densities) and quantize (k-means) without retraining."""
    prune = prune_rules.rule(rule)
    layers = compressible(params)
    if not layers:
        raise InputError("the caffemodel has no Convolution or InnerProduct layers to compress")
    dens = dict(paper.PAPER_DENSITY.get(net, {})) if net else {}
    dens.update(density or {})
    out = type(params)(params)
    for n in layers:
        lp = params[n]
        w = lp.blobs[0]
        d = dens.get(n, 1.0)
        if d < 1.0:
            w = np.where(prune.mask(w, d), w, np.float32(0))
        b = (bits or {}).get(n) or layer_policy.default_bits(lp.type, net, n)
        cb, codes = quantization.quantize_layer(np.asarray(w, dtype=np.float32), int(b), init=init, seed=seed)
        out[n] = type(lp)(lp.type, [cb[codes]] + list(lp.blobs[1:]))
        quantization.attach_codebook(out, n, cb, codes)
    return out


def encode_params(params: Params, net: Optional[str] = None,
                  index_bits: Optional[Mapping[str, IndexBits]] = None,
                  meta: Optional[dict] = None,
                  default: IndexBits = IndexWidth.AUTO) -> Tuple[bytes, "codec.ModelStats"]:
    """Encode a quantized Params dict (with codebook/codes blobs) into .dcz bytes.

    Each quantized layer's index width is ``index_bits[layer]`` if given,
    else ``default``: bits 1..12, 0 for a dense record, ``IndexWidth.AUTO``
    (or None) for the width of the smallest record, ``IndexWidth.PAPER`` for
    the paper's (``layer_policy.paper_index_bits``).
    """
    net = net or guess_net(params)
    types = {n: lp.type for n, lp in params.items()}
    layers_with_cb = [n for n in params if blob_name(n, CODEBOOK) in params]
    chosen: Dict[str, IndexBits] = {n: default for n in layers_with_cb}
    for n, v in (index_bits or {}).items():
        if n not in chosen:
            raise InputError("--index-bits names %r, which is not a quantized layer (%s)" % (n, ", ".join(chosen)))
        chosen[n] = v
    ib = {n: resolve_index_bits(v, net, types[n]) for n, v in chosen.items()}
    specs, order = codec.specs_from_quantized_params(params, ib)
    qs, raws = codec.from_params(params, specs, order)
    m = dict(meta or {})
    m.setdefault("paper_net", net)
    return codec.encode_model_report(net or "unknown", qs, raws, m)


def decode_bytes(data: bytes, max_weights: int = codec.DEFAULT_MAX_WEIGHTS) -> Tuple[Params, "codec.ModelStats", dict]:
    dec, stats = codec.decode_model_report(data, max_weights)
    return codec.to_params(dec), stats, dec.meta


def read_blob(path: str) -> bytes:
    require_file(path, "compressed blob")
    with open(path, "rb") as f:
        return f.read()


def verify_equal(a: Params, b: Params, what: str) -> int:
    """Bit-for-bit comparison of every layer of ``a`` against ``b``; returns the number of values checked."""
    n = 0
    for name, lp in a.items():
        if name not in b:
            raise InputError("%s: layer %r is missing" % (what, name))
        if len(lp.blobs) != len(b[name].blobs):
            raise InputError("%s: layer %r has %d blobs, expected %d" % (what, name, len(b[name].blobs), len(lp.blobs)))
        for i, (x, y) in enumerate(zip(lp.blobs, b[name].blobs)):
            if x.shape != y.shape or not np.array_equal(x.view(np.uint32), np.ascontiguousarray(y, np.float32).view(np.uint32)):
                raise InputError("%s: layer %r blob %d is not bit-identical" % (what, name, i))
            n += x.size
    return n


def load_arrays(dcz: str, max_weights: int = codec.DEFAULT_MAX_WEIGHTS) -> Dict[str, list]:
    """``{layer name: [numpy arrays]}`` of the ``.dcz`` file ``dcz`` (``caffe_dc.load_arrays``)."""
    params, _, _ = decode_bytes(read_blob(dcz), max_weights)
    return {name: list(lp.blobs) for name, lp in params.items()}
