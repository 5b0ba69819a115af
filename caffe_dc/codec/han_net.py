"""The authors' released compressed-model format (``.net``), byte for byte.

Han et al. released compressed AlexNet and SqueezeNet as ``.net`` files with
a small decoder (pruning + quantization, no Huffman coding). The layout, as
in ``shared/reference/han_net_format.md``, all little-endian:

    uint32 nz[L]                      entries per selected layer (kept + fillers)
    per selected layer, in net order:
        float32 codebook[2**bits]     codebook[0] = 0.0 ("zero"), no other 0.0
        float32 bias[num_output]      raw
        codes: nz entries             8-bit: a byte each; 4-bit: two per byte, even entry low nibble
        gaps:  nz entries, 4 bits     two per byte, low nibble first (conv layers too)

Selected layers: parameterised layers whose name contains ``conv``, ``fc``
or ``ip``; codes are 8 bits if the name contains ``conv``, else 4. An entry
with gap g skips g weights and lands on the next: positions are
``cumsum(g + 1) - 1`` in Caffe's flat blob order; all other weights are 0.
A gap over 15 is split by fillers (gap 15, code 0). Nibbles go low first,
as the authors' decoder reads them (other public writers disagree).

Only numpy here; ``stages.net_format`` imports and exports against a deploy
prototxt through Caffe.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence, Tuple

import numpy as np

from caffe_dc.algorithms import quantization
from caffe_dc.base.errors import FormatError, InputError
from caffe_dc.codec import sparse_format

GAP_BITS = 4
MAX_GAP = (1 << GAP_BITS) - 1      # 15: a longer gap needs fillers
CONV_CODE_BITS = 8
OTHER_CODE_BITS = 4


def is_selected(name: str) -> bool:
    return "conv" in name or "fc" in name or "ip" in name


def code_bits(name: str) -> int:
    return CONV_CODE_BITS if "conv" in name else OTHER_CODE_BITS


def select_layers(layer_names: Sequence[str]) -> List[Tuple[str, int]]:
    """[(name, code bits)] of the layers the format stores, in the given (net) order.

    ``layer_names`` should be the net's *parameterised* layers in net order
    (e.g. ``caffe.Net.params.keys()``): a parameter-free layer whose name
    happens to contain 'ip' ("clip", say) would otherwise be picked.
    """
    return [(n, code_bits(n)) for n in layer_names if is_selected(n)]


class HanLayer(NamedTuple):
    """One decoded (or to-be-encoded) layer."""
    name: str
    codebook: np.ndarray   # float32[2**bits], codebook[0] == 0.0
    codes: np.ndarray      # uint8, one code per weight (flat, Caffe order); 0 = zero
    bias: np.ndarray       # float32, flat
    entries: int = 0       # stored entries, fillers included (set by read_net)

    @property
    def weights(self) -> np.ndarray:
        """The flat float32 weights, ``codebook[codes]``."""
        return self.codebook[self.codes]


# --- entries and bit packing: the container's rules ----------------------------
#
# The filler rule is ``sparse_format``'s with 4 index bits, and 4-bit fields are
# packed by ``sparse_format.pack_nibbles`` (low nibble first): one implementation
# serves the ``.dcz`` container and this format.

def _stream_bytes(n: int, bits: int) -> int:
    """(n - 1) // (8 / bits) + 1 for n > 0, as the authors' decoder; 0 for an empty layer."""
    return (n * bits + 7) // 8


def encode_entries(codes_flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(gaps, codes) of the stored entries for one layer, both uint8: the greedy filler encoder.

    For each nonzero code in flat order, the gap from the previous stored
    position is split into gap // 16 fillers (gap 15, code 0) followed by
    the entry itself with gap % 16 (``sparse_format.to_entries`` with 4
    index bits). Weights after the last nonzero need no entry.
    """
    return sparse_format.to_entries(np.asarray(codes_flat).astype(np.uint8, copy=False), GAP_BITS)


def _f32(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.size and not np.isfinite(a).all():
        raise InputError("%s contains NaN or infinity" % what)
    return np.ascontiguousarray(a, dtype="<f4").ravel()


def write_net(layers: Sequence) -> bytes:
    """The ``.net`` bytes for ``layers``: each (name, codebook, codes_flat, bias) or a HanLayer.

    The code width comes from the name (8 bits with 'conv', else 4), and
    ``codebook`` must have exactly 2**bits float32 entries with
    ``codebook[0] == 0.0`` and no other 0.0; ``codes_flat`` holds one code
    per weight (0 = zero weight) in Caffe's flat order. Layers must be the
    selected ones, in net order (see ``select_layers``).
    """
    header = []
    body = []
    for layer in layers:
        name, codebook, codes, bias = layer[:4]
        if not is_selected(name):
            raise InputError("layer %r cannot be stored in the .net format: its name has no conv, fc or ip" % name)
        bits = code_bits(name)
        cb = _f32(codebook, "codebook of %s" % name)
        if cb.size != 1 << bits:
            raise InputError("layer %s needs a %d-entry codebook (%d-bit codes), got %d entries"
                             % (name, 1 << bits, bits, cb.size))
        if cb[0] != 0.0 or np.count_nonzero(cb[1:] == 0.0):
            raise InputError("layer %s: codebook[0] must be 0.0 and no other entry 0.0" % name)
        codes = np.asarray(codes).ravel()
        if codes.size and (codes.min() < 0 or codes.max() >= cb.size):
            raise InputError("layer %s: codes must be in 0..%d" % (name, cb.size - 1))
        gaps, entry_codes = encode_entries(codes)
        header.append(gaps.size)
        body.append(cb.tobytes())
        body.append(_f32(bias, "bias of %s" % name).tobytes())
        body.append(entry_codes.tobytes() if bits == 8 else sparse_format.pack_nibbles(entry_codes))
        body.append(sparse_format.pack_nibbles(gaps))
    if any(n > 0xFFFFFFFF for n in header):
        raise InputError("a layer has more entries than a uint32 count can hold")
    return np.asarray(header, dtype="<u4").tobytes() + b"".join(body)


# --- decoding -----------------------------------------------------------------

def read_net(data: bytes, layers_spec: Sequence[Tuple[str, int, int]]) -> List[HanLayer]:
    """Decode ``.net`` bytes; ``layers_spec`` is [(name, weight count, bias count)] in net order.

    Give the deploy net's parameterised layers; the ones the format stores
    are picked from them by name (``select_layers``). Raises FormatError if
    the file is truncated, has bytes left over, places a weight past the
    end of its layer, has a codebook[0] other than 0.0, or holds NaN or
    infinite floats. All sizes are checked before anything is allocated.
    """
    spec = [(str(n), int(w), int(b)) for n, w, b in layers_spec if is_selected(str(n))]
    if not spec:
        raise InputError("the net has no layer whose name contains conv, fc or ip: nothing to read")
    data = bytes(data)
    L = len(spec)
    if len(data) < 4 * L:
        raise FormatError(".net file is truncated: %d bytes, but the header of %d layer counts alone needs %d"
                          % (len(data), L, 4 * L))
    nz = np.frombuffer(data, dtype="<u4", count=L).astype(np.int64)
    off = 4 * L
    out = []
    for (name, n_w, n_b), n in zip(spec, nz):
        n = int(n)
        bits = code_bits(name)
        K = 1 << bits
        if n > n_w:
            raise FormatError(".net layer %s claims %d entries for %d weights: corrupt, or not this net"
                              % (name, n, n_w))
        sizes = (4 * K, 4 * n_b, _stream_bytes(n, bits), _stream_bytes(n, GAP_BITS))
        if off + sum(sizes) > len(data):
            raise FormatError(".net file is truncated in layer %s: needs %d more bytes, %d left"
                              % (name, sum(sizes), len(data) - off))
        cb = np.frombuffer(data, dtype="<f4", count=K, offset=off).astype(np.float32)
        off += sizes[0]
        bias = np.frombuffer(data, dtype="<f4", count=n_b, offset=off).astype(np.float32)
        off += sizes[1]
        raw = data[off:off + sizes[2]]
        off += sizes[2]
        entry_codes = np.frombuffer(raw, dtype=np.uint8)[:n] if bits == 8 else sparse_format.unpack_nibbles(raw, n)
        gaps = sparse_format.unpack_nibbles(data[off:off + sizes[3]], n)
        off += sizes[3]
        if cb[0] != 0.0:
            raise FormatError(".net layer %s: codebook[0] is %r, not 0.0: corrupt, or not a .net file"
                              % (name, float(cb[0])))
        if not (np.isfinite(cb).all() and np.isfinite(bias).all()):
            raise FormatError(".net layer %s holds NaN or infinite values: corrupt" % name)
        try:
            codes = sparse_format.from_entries(gaps, entry_codes, n_w, dtype=np.uint8)
        except FormatError as e:
            raise FormatError(".net layer %s: %s" % (name, e))
        out.append(HanLayer(name, cb, codes, bias, n))
    if off != len(data):
        raise FormatError(".net file has %d bytes left over after its last layer: corrupt, or not this net"
                          % (len(data) - off))
    return out


def codebook_for(name: str, w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(codebook, codes) of a layer whose weights are already quantized, for the ``.net`` format.

    The codebook is 0.0 then the distinct nonzero values ascending, padded
    as ``quantization.quantize_layer`` pads (``quantization.pad_codebook``).
    """
    bits = code_bits(name)
    K = 1 << bits
    flat = np.asarray(w, dtype=np.float32).ravel()
    if not np.isfinite(flat).all():
        raise InputError("layer %s has NaN or infinite weights" % name)
    values = np.unique(flat[flat != 0])
    if values.size > K - 1:
        raise InputError("layer %s has %d distinct nonzero weights, but the .net format stores %d-bit codes "
                         "for it (at most %d besides 0): quantize with 8 bits for conv layers and 4 bits for "
                         "the others first" % (name, values.size, bits, K - 1))
    codebook = quantization.pad_codebook(np.concatenate([[0.0], values]), bits)
    codes = np.zeros(flat.size, dtype=np.uint8)
    nzpos = np.flatnonzero(flat)
    codes[nzpos] = quantization.nearest(flat[nzpos], values) + 1    # exact: every value is a centroid
    return codebook, codes
