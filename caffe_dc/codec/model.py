"""Model-level codec: quantized layers <-> ``.dcz`` bytes <-> caffemodel params.

This is what the CLI calls (stage 3 of Deep Compression, applied offline
after all fine-tuning):

* ``from_params(params, quant)`` -- a caffemodel's blobs plus, per
  compressed layer, its codebook and codes -> blobs to store;
  ``specs_from_quantized_params`` reads those codebooks and codes straight
  out of a quantized caffemodel (its ``L_codebook``/``L_codes`` blobs).
* ``encode_model`` / ``encode_model_report`` -> bytes (and size figures).
* ``decode_model`` / ``decode_model_report`` -> ``Decoded(layers, raw, meta)``.
* ``to_params(decoded)`` -> ordered ``{layer: LayerParams(type, blobs)}`` that
  ``caffemodel.save_params`` writes as a caffemodel Caffe loads; the weights
  are ``codebook[codes]``, bit-identical to the quantized model.

The size figures follow the paper's Tables 2-5 ("compress rate = compressed
size / original size, codebook and meta-data included", dense float32 = 32
bits per weight):

* **P+Q** per layer: ``entries * weight_bits + entries * index_bits +
  2**weight_bits * 32`` -- fixed-width codes and gaps, fillers included,
  plus the codebook.
* **P+Q+H** per layer: the record's actual bytes in the file -- Huffman
  payloads of both streams, their code-length tables and block offsets, the
  codebook, and the record's own header and CRC.
* **Totals** add the raw blobs (biases ...) and the file header; the total
  P+Q+H is exactly the file size.

A quantized layer whose record would be larger than its float32 values is
stored raw (``container.write``; record kind 3, format 1.2). It stays a row
of the per-layer table, marked ``raw`` (``BlobStats.stored_raw``), with its
record's bytes as P+Q+H and 32 bits per weight as P+Q: what the file holds.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, fields
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from caffe_dc.algorithms import quantization
from caffe_dc.codec import container
from caffe_dc.codec import huffman
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.codec.container import RecordInfo
from caffe_dc.codec.entropy import DEFAULT_BLOCK
from caffe_dc.base.errors import InputError

QuantizedLayer = container.QuantizedBlob   # name, type, blob, codebook, codes, weight_bits, index_bits
RawBlob = container.RawBlob                # name, type, blob, data
DEFAULT_MAX_WEIGHTS = container.DEFAULT_MAX_WEIGHTS


class QuantSpec(NamedTuple):
    """How one layer's weight blob (blob 0) is quantized.

    ``index_bits`` 1..12 is the relative-index field of the paper; 0 stores
    the layer dense (every code, no gaps: format 1.1); None lets the writer
    pick the width that gives the smallest record (``container.choose_index_bits``).

    ``weight_bits`` defaults to ``ceil(log2(len(codebook)))``; a shorter
    codebook is padded up to ``2**weight_bits`` entries by repeating its
    last entry (``quantization.pad_codebook``; codes never point at the
    padding, so the weights are unchanged).
    """
    codebook: np.ndarray
    codes: np.ndarray
    index_bits: Optional[int]
    weight_bits: Optional[int] = None


class Decoded(NamedTuple):
    layers: List[QuantizedLayer]
    raw: List[RawBlob]       # quantized layers stored raw among them (``RawBlob.quantized``)
    meta: dict   # net, layers (name/type/blobs in file order), version, meta (free-form, from the writer)


# ============================================================================ stats

@dataclass
class BlobStats:
    """Storage figures for one stored blob (a row of the paper's per-layer tables)."""
    name: str
    blob: int
    kind: str                 # "quantized" (a compressed layer's weights) or "raw" (biases ...)
    weights: int              # values in the blob
    nonzero: int = 0
    entries: int = 0
    fillers: int = 0
    weight_bits: int = 0
    index_bits: int = 0
    codebook_bits: int = 0
    pq_bits: int = 0          # P+Q: entries*(weight_bits+index_bits) + codebook
    code_bits: int = 0        # Huffman payloads (exact bit counts)
    gap_bits: int = 0
    table_bits: int = 0       # code-length tables
    offset_bits: int = 0      # block offsets
    pqh_bits: int = 0         # P+Q+H: the record's bytes in the file * 8
    code_entropy: float = 0.0  # Shannon entropy, bits per entry
    gap_entropy: float = 0.0
    stored_raw: bool = False  # a quantized layer stored as float32 values: no streams, no codebook

    @property
    def original_bits(self) -> int:
        return 32 * self.weights

    @property
    def density(self) -> Optional[float]:
        return self.nonzero / self.weights if self.weights else None

    @property
    def rate_pq(self) -> Optional[float]:
        return self.pq_bits / self.original_bits if self.weights else None

    @property
    def rate_pqh(self) -> Optional[float]:
        return self.pqh_bits / self.original_bits if self.weights else None

    @property
    def weight_bits_h(self) -> Optional[float]:
        """Huffman bits per stored code (the paper's "weight bits +H")."""
        return self.code_bits / self.entries if self.entries else None

    @property
    def index_bits_h(self) -> Optional[float]:
        return self.gap_bits / self.entries if self.entries else None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}   # all scalars: no deep copy (asdict)
        for k in ("original_bits", "density", "rate_pq", "rate_pqh", "weight_bits_h", "index_bits_h"):
            d[k] = getattr(self, k)
        return d


def blob_stats(info: RecordInfo) -> BlobStats:
    if info.kind in ("raw", "quantized-raw"):
        stored_raw = info.kind == "quantized-raw"
        return BlobStats(info.name, info.blob, "quantized" if stored_raw else "raw", info.size,
                         nonzero=info.nonzero if stored_raw else info.size, pq_bits=32 * info.size,
                         pqh_bits=8 * info.record_bytes, stored_raw=stored_raw)
    e = info.entries
    return BlobStats(
        info.name, info.blob, "quantized", info.size, info.nonzero, e, info.fillers, info.weight_bits,
        info.index_bits, info.codebook_bits, e * (info.weight_bits + info.index_bits) + info.codebook_bits,
        info.code_bits, info.gap_bits, info.table_bits, info.offset_bits, 8 * info.record_bytes,
        huffman.entropy(info.code_counts) if info.code_counts is not None else float("nan"),
        huffman.entropy(info.gap_counts) if info.gap_counts is not None else float("nan"))


@dataclass
class ModelStats:
    net: str
    blobs: List[BlobStats]
    header_bits: int          # magic, version, JSON header, header CRC
    file_bits: int

    @property
    def quantized(self) -> List[BlobStats]:
        return [b for b in self.blobs if b.kind == "quantized"]

    @property
    def raw(self) -> List[BlobStats]:
        return [b for b in self.blobs if b.kind == "raw"]

    def totals(self) -> dict:
        """The paper's "total" row, plus the whole-file figures (raw blobs and header included)."""
        q, r = self.quantized, self.raw
        w = sum(b.weights for b in q)
        e = sum(b.entries for b in q)
        raw_vals = sum(b.weights for b in r)
        orig_all = 32 * (w + raw_vals)
        pq_q = sum(b.pq_bits for b in q)
        pqh_q = sum(b.pqh_bits for b in q)
        pq_all = pq_q + 32 * raw_vals + self.header_bits
        ratio = lambda a, b: a / b if b else None
        return {
            "weights": w, "nonzero": sum(b.nonzero for b in q), "entries": e,
            "fillers": sum(b.fillers for b in q),
            "density": ratio(sum(b.nonzero for b in q), w),
            "weight_bits_pq": ratio(sum(b.entries * b.weight_bits for b in q), e),
            "weight_bits_h": ratio(sum(b.code_bits for b in q), e),
            "index_bits_pq": ratio(sum(b.entries * b.index_bits for b in q), e),
            "index_bits_h": ratio(sum(b.gap_bits for b in q), e),
            "code_entropy": ratio(sum(b.code_entropy * b.entries for b in q), e),
            "gap_entropy": ratio(sum(b.gap_entropy * b.entries for b in q), e),
            # both streams: their Huffman payloads, and the zero-order entropy bound (sum of n * H)
            "huffman_bits": sum(b.code_bits + b.gap_bits for b in q),
            "entropy_bits": sum((b.code_entropy + b.gap_entropy) * b.entries for b in q),
            # quantized layers only (the sum of the per-layer rows)
            "layers_pq_bits": pq_q, "layers_pqh_bits": pqh_q,
            "layers_rate_pq": ratio(pq_q, 32 * w), "layers_rate_pqh": ratio(pqh_q, 32 * w),
            # everything: raw blobs (biases ...) and the file header too
            "raw_values": raw_vals, "header_bits": self.header_bits, "original_bits": orig_all,
            "pq_bits": pq_all, "pqh_bits": self.file_bits,
            "rate_pq": ratio(pq_all, orig_all), "rate_pqh": ratio(self.file_bits, orig_all),
            "file_bytes": self.file_bits // 8,
        }

    def to_dict(self) -> dict:
        return {"net": self.net, "layers": [b.to_dict() for b in self.blobs], "totals": self.totals()}

    def table(self) -> str:
        """Per-layer text table in the paper's columns, with the total row."""
        from caffe_dc.base.tables import pct, text_table

        f = lambda x, d=2: "–" if x is None else "%.*f" % (d, x)
        rows = []
        for b in self.quantized:
            if b.stored_raw:   # no entries, streams or codebook: the values as they are
                rows.append([b.name, b.weights, pct(b.density), "–", "–", "raw", "–", "–", "raw", "–", "–",
                             pct(b.rate_pq, 2), pct(b.rate_pqh, 2)])
                continue
            rows.append([b.name, b.weights, pct(b.density), b.entries, b.fillers, b.weight_bits, f(b.weight_bits_h),
                         f(b.code_entropy), b.index_bits, f(b.index_bits_h), f(b.gap_entropy),
                         pct(b.rate_pq, 2), pct(b.rate_pqh, 2)])
        t = self.totals()
        rows.append(["total (+raw, header)", t["weights"], pct(t["density"]), t["entries"], t["fillers"],
                     f(t["weight_bits_pq"]), f(t["weight_bits_h"]), f(t["code_entropy"]), f(t["index_bits_pq"]),
                     f(t["index_bits_h"]), f(t["gap_entropy"]), pct(t["rate_pq"], 2), pct(t["rate_pqh"], 2)])
        return text_table(["layer", "#weights", "W%", "entries", "fillers", "wb P+Q", "wb +H", "H(w)",
                           "ib P+Q", "ib +H", "H(i)", "rate P+Q", "rate P+Q+H"], rows)


def _model_stats(net: str, infos: Sequence[RecordInfo], file_bytes: int) -> ModelStats:
    blobs = [blob_stats(i) for i in infos]
    header_bits = 8 * file_bytes - sum(b.pqh_bits for b in blobs)
    return ModelStats(net, blobs, header_bits, 8 * file_bytes)


# ============================================================================ encode / decode

def encode_model_report(net: str, layers: Sequence[QuantizedLayer], raw: Sequence[RawBlob] = (),
                        meta: Optional[dict] = None, block_size: int = DEFAULT_BLOCK,
                        raw_fallback: bool = True, coder: str = container.DEFAULT_CODER) -> Tuple[bytes, ModelStats]:
    """Encode and return the bytes with their size figures (``raw_fallback``, ``coder``: see ``container.write``)."""
    data, infos = container.write(net, list(layers) + list(raw), meta, block_size, raw_fallback, coder)
    return data, _model_stats(net, infos, len(data))


def encode_model(net: str, layers: Sequence[QuantizedLayer], raw: Sequence[RawBlob] = (),
                 meta: Optional[dict] = None, block_size: int = DEFAULT_BLOCK,
                 raw_fallback: bool = True) -> bytes:
    """Serialise quantized layers and raw blobs into ``.dcz`` bytes (``InputError`` on bad input)."""
    return encode_model_report(net, layers, raw, meta, block_size, raw_fallback)[0]


def decode_model_report(data, max_weights: int = DEFAULT_MAX_WEIGHTS) -> Tuple[Decoded, ModelStats]:
    header, blobs, infos = container.read(data, max_weights)
    meta = {"net": header["net"], "layers": header["layers"], "version": header["version"],
            "meta": header.get("meta", {})}
    dec = Decoded([b for b in blobs if isinstance(b, QuantizedLayer)],
                  [b for b in blobs if isinstance(b, RawBlob)], meta)
    return dec, _model_stats(header["net"], infos, len(container.bytes_view(data)))


def decode_model(data, max_weights: int = DEFAULT_MAX_WEIGHTS) -> Decoded:
    """Parse and validate ``.dcz`` bytes (``FormatError`` on anything wrong)."""
    return decode_model_report(data, max_weights)[0]


# ============================================================================ params

def to_params(decoded: Decoded) -> Params:
    """Ordered ``{layer: LayerParams(type, [blobs])}``, weights = codebook[codes] (float32)."""
    by_layer: Dict[str, Dict[int, np.ndarray]] = collections.defaultdict(dict)
    for q in decoded.layers:
        by_layer[q.name][q.blob] = q.weights()
    for r in decoded.raw:
        by_layer[r.name][r.blob] = np.asarray(r.data, dtype=np.float32)
    out: Params = collections.OrderedDict()
    for lay in decoded.meta["layers"]:
        blobs = by_layer.get(lay["name"], {})
        out[lay["name"]] = LayerParams(lay["type"], [blobs[i] for i in range(len(blobs))])
    return out


def _weight_bits(spec: QuantSpec, where: str) -> int:
    n = int(np.size(spec.codebook))
    wb = spec.weight_bits if spec.weight_bits is not None else max(1, math.ceil(math.log2(max(n, 1))))
    if (1 << int(wb)) < n:
        raise InputError("%s: a codebook of %d entries needs more than %d bits" % (where, n, wb))
    return int(wb)


def from_params(params: Params, quant: Mapping[str, QuantSpec], layers: Optional[Sequence[str]] = None,
                check: bool = True) -> Tuple[List[QuantizedLayer], List[RawBlob]]:
    """Blobs to encode from caffemodel params: blob 0 of each layer in ``quant`` is quantized.

    ``layers`` picks and orders the layers stored (default: all of
    ``params``). With ``check`` (default) every quantized blob must equal
    ``codebook[codes]`` bit for bit, so the decoded caffemodel is exactly
    the model that was evaluated; a mismatch is an ``InputError``.
    """
    names = list(params) if layers is None else list(layers)
    missing = [n for n in list(names) + list(quant) if n not in params]
    if missing:
        raise InputError("layer %r is not in the model (layers: %s)" % (missing[0], ", ".join(params)))
    stray = [n for n in quant if n not in names]
    if stray:
        raise InputError("layer %r has a codebook but is not among the layers to store" % stray[0])
    qs: List[QuantizedLayer] = []
    raws: List[RawBlob] = []
    for name in names:
        lp = params[name]
        for i, arr in enumerate(lp.blobs):
            if i == 0 and name in quant:
                spec = quant[name]
                where = "layer %r" % name
                wb = _weight_bits(spec, where)
                cb = quantization.pad_codebook(spec.codebook, wb)
                codes = np.asarray(spec.codes)
                if codes.shape != np.shape(arr):
                    if codes.size != np.size(arr):
                        raise InputError("%s: codes of shape %s for weights of shape %s"
                                         % (where, codes.shape, np.shape(arr)))
                    codes = codes.reshape(np.shape(arr))
                ib = None if spec.index_bits is None else int(spec.index_bits)
                q = QuantizedLayer(name, lp.type, 0, cb, codes, wb, ib)
                if check:
                    container.as_codes(codes, cb.size, where)  # range check before indexing
                    w = np.asarray(arr, dtype=np.float32)
                    wq = cb[codes.astype(np.int64) if codes.dtype.kind == "f" else codes]
                    if not np.array_equal(wq, w):
                        bad = int(np.count_nonzero(wq != w))
                        raise InputError("%s: %d weights differ from codebook[codes] (max |diff| %.3g); "
                                         "the model is not exactly quantized" % (where, bad, float(np.nanmax(np.abs(wq - w)))))
                qs.append(q)
            else:
                raws.append(RawBlob(name, lp.type, i, np.asarray(arr, dtype=np.float32)))
    return qs, raws


def specs_from_quantized_params(params: Params, index_bits: Union[Optional[int], Mapping[str, Optional[int]]]
                                ) -> Tuple[Dict[str, QuantSpec], List[str]]:
    """Codebooks and codes from a quantized caffemodel (stage 2's output).

    Such a model carries, for each quantized layer ``L``, ``Parameter``
    layers ``L_codebook`` and ``L_codes`` (and ``L_mask``); they are the
    source of the codebook and codes, and are not themselves stored. Returns
    the specs and the names of the layers to store, in model order.
    ``index_bits``: one width for all, or one per layer (see ``QuantSpec``;
    None: the writer's choice).
    """
    from caffe_dc.base.blobs import CODEBOOK, CODES, MASK, blob_name

    helpers = set()
    specs: Dict[str, QuantSpec] = {}
    for name in params:
        cb_name, codes_name = blob_name(name, CODEBOOK), blob_name(name, CODES)
        if cb_name in params and codes_name in params:
            if isinstance(index_bits, Mapping):
                if name not in index_bits:
                    raise InputError("no index_bits given for layer %r" % name)
                ib = index_bits[name]
            else:
                ib = index_bits
            cb = params[cb_name].blobs[0].ravel()
            specs[name] = QuantSpec(cb, params[codes_name].blobs[0], None if ib is None else int(ib),
                                    max(1, math.ceil(math.log2(max(cb.size, 1)))))
            helpers.update({cb_name, codes_name, blob_name(name, MASK)})
    if not specs:
        raise InputError("the model has no %s/%s blobs: quantize it first" % (CODEBOOK, CODES))
    return specs, [n for n in params if n not in helpers]
