"""AlexNet / VGG-16 storage at the paper's settings, without ImageNet.

*Deep Compression*'s headline is storage: AlexNet 240 MB -> 6.9 MB (35x),
VGG-16 552 MB -> 11.3 MB (49x), Tables 4 and 5. We have neither ImageNet
nor the reference caffemodels here, so this module shows the other half of
the claim: our **real** pipeline -- ``pruning.density_mask`` to the tables'
W%, ``quantization.quantize_layer`` (k-means, linear init) with the
tables' bits, the ``.dcz`` encoder with the tables' index bits, and the
decoder -- reaches the paper's storage on nets of the paper's exact layer
shapes, and decodes them bit for bit. The weights are **synthetic** unless
a caffemodel is given (``weights=``); every line this module prints, and
every report it writes, says which.

What synthetic weights can and cannot show
------------------------------------------
Storage is set by (a) how many weights are kept (fixed: the paper's W%),
(b) the codebook size (fixed: the paper's bits), (c) how skewed the codes
are (the Huffman gain on weights) and (d) how the kept positions are spread
(the index gaps and their Huffman gain). (c) depends on the shape of the
weight distribution; (d) on the structure a trained net has and i.i.d.
weights lack (dead neurons, strong filters). So the sizes below are those
of a net whose weights follow the chosen distribution; they are a check of
our encoder at the paper's settings, not a reproduction of Han et al.'s
trained models.

The synthetic distribution (``synthetic_layer``): i.i.d. **Laplace**, per
layer, with the standard deviation of the Caffe filler in the published
prototxt (``prototxt/*_train_val.prototxt``, also the reference recipes):
AlexNet gaussian std 0.01 for conv1-5 and fc8, 0.005 for fc6 and fc7;
VGG-16 "xavier" (Caffe's: uniform +-sqrt(3 / fan_in), std 1/sqrt(fan_in)).
Why Laplace: trained conv and fc weights are sharply peaked at zero with
heavier tails than a Gaussian (Han et al. 2015, Fig. 4; *Deep Compression*,
Fig. 5, shows the same peaked shape before pruning), and the Laplace is the
standard fit for them. Its tail is again exponential, so magnitude pruning
leaves the bimodal ``+-(t + Exp)`` shape of the paper's pruned layers.
Why the filler's scale: only the *shape* matters -- magnitude pruning,
linear-init k-means and the codes are all scale-equivariant, so each
layer's storage does not depend on its scale (up to float rounding); the
filler scale just keeps the numbers plausible. Biases get the filler's
constant; they are stored raw (32 bits each) whatever their values.

Memory: VGG-16 has 138M weights (553 MB as float32). Layers are generated
(or taken from the caffemodel), pruned and quantized one at a time; what
is kept per layer is the float32 quantized weights the encoder checks
against, the uint8 codes (not Caffe's float codes blob: 4x smaller) and
the codebook. ``density_mask`` makes float64 temporaries of the layer it
prunes (about 2 GB for VGG fc6); nothing else of that size is made.
"""
from __future__ import annotations

import collections
import math
import os
import resource
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.stages import encode as encoding
from caffe_dc.base import paper
from caffe_dc.algorithms import pruning
from caffe_dc.algorithms import quantization
from caffe_dc.base.blobs import CODEBOOK, CODES, blob_name
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.errors import InputError

CONV, FC = "Convolution", "InnerProduct"
SYNTHETIC = "synthetic weights"
DEFAULT_SEED = 0
_CHUNK = 1 << 22   # values generated per step: bounded temporaries for any layer size
MIN_FIT_SAMPLE = 512   # a k-means sample must comfortably exceed the 255 centroids of 8-bit layers


class Layer(NamedTuple):
    """One compressible layer: its weight shape and the Caffe fillers of the published prototxt."""
    name: str
    type: str                 # CONV or FC
    shape: Tuple[int, ...]    # Caffe blob 0: (out, in/group, kh, kw) or (out, in)
    std: float                # weight filler standard deviation
    bias: float               # bias filler constant

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64))


def _alexnet() -> List[Layer]:
    """bvlc_alexnet: gaussian weight fillers, constant bias fillers (train_val.prototxt)."""
    return [
        Layer("conv1", CONV, (96, 3, 11, 11), 0.01, 0.0),
        Layer("conv2", CONV, (256, 48, 5, 5), 0.01, 0.1),     # group 2: 96 / 2 = 48 inputs
        Layer("conv3", CONV, (384, 256, 3, 3), 0.01, 0.0),
        Layer("conv4", CONV, (384, 192, 3, 3), 0.01, 0.1),    # group 2
        Layer("conv5", CONV, (256, 192, 3, 3), 0.01, 0.1),    # group 2
        Layer("fc6", FC, (4096, 9216), 0.005, 0.1),
        Layer("fc7", FC, (4096, 4096), 0.005, 0.1),
        Layer("fc8", FC, (1000, 4096), 0.01, 0.0),
    ]


def _vgg16() -> List[Layer]:
    """VGG-16 (configuration D): xavier fillers, std = 1 / sqrt(fan_in); biases 0."""
    convs = [("conv1_1", 64, 3), ("conv1_2", 64, 64), ("conv2_1", 128, 64), ("conv2_2", 128, 128),
             ("conv3_1", 256, 128), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
             ("conv4_1", 512, 256), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
             ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)]
    out = [Layer(n, CONV, (o, i, 3, 3), 1.0 / math.sqrt(i * 9), 0.0) for n, o, i in convs]
    out += [Layer(n, FC, (o, i), 1.0 / math.sqrt(i), 0.0)
            for n, o, i in (("fc6", 4096, 25088), ("fc7", 4096, 4096), ("fc8", 1000, 4096))]
    return out


NET_LAYERS: Dict[str, List[Layer]] = {paper.ALEXNET: _alexnet(), paper.VGG16: _vgg16()}
NETS = tuple(NET_LAYERS)


def check_net(net: str) -> str:
    n = str(net).strip().lower().replace("-", "")
    n = {"vgg": paper.VGG16}.get(n, n)
    if n not in NET_LAYERS:
        raise InputError("storage runs on %s, not %r" % (" or ".join(NETS), net))
    return n


def net_layers(net: str, shrink: int = 1, only: Optional[Sequence[str]] = None) -> List[Layer]:
    """The net's layers; ``shrink`` > 1 divides both channel axes (tests), ``only`` picks layers by name.

    A shrunk layer keeps its kernel size and filler and gets
    ``ceil(out / shrink) x ceil(in / shrink)`` channels, so a test runs the
    same code on the same layer list in a fraction of the time.
    """
    layers = NET_LAYERS[check_net(net)]
    if isinstance(shrink, bool) or not isinstance(shrink, (int, np.integer)) or shrink < 1:
        raise InputError("shrink must be an integer >= 1, got %r" % (shrink,))
    if shrink > 1:
        layers = [l._replace(shape=(-(-l.shape[0] // shrink), -(-l.shape[1] // shrink)) + l.shape[2:])
                  for l in layers]
    if only is not None:
        names = [l.name for l in layers]
        bad = [n for n in only if n not in names]
        if bad:
            raise InputError("%s has no layer %r (layers: %s)" % (net, bad[0], ", ".join(names)))
        layers = [l for l in layers if l.name in set(only)]
    return layers


def source_label(weights: Optional[str]) -> str:
    return SYNTHETIC if weights is None else "weights from %s" % os.path.basename(weights)


# ============================================================================ weights

def synthetic_layer(layer: Layer, seed: int = DEFAULT_SEED, index: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(weights float32 of ``layer.shape``, biases float32[out]): i.i.d. Laplace, std = the filler's.

    Laplace(0, b) has std b * sqrt(2). Drawn as a float32 exponential with
    a random sign, in chunks, straight into the output: no float64 copy of
    the layer is ever made. Each layer has its own stream, seeded by
    ``(seed, index)``, so a layer's weights do not depend on the others.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    n = layer.size
    w = np.empty(n, dtype=np.float32)
    b = np.float32(layer.std / math.sqrt(2.0))
    for s in range(0, n, _CHUNK):
        part = w[s:s + _CHUNK]
        rng.standard_exponential(out=part, dtype=np.float32)
        part *= b
        neg = rng.integers(0, 2, part.size, dtype=np.uint8).view(bool)
        np.negative(part, out=part, where=neg)
    return w.reshape(layer.shape), np.full(layer.shape[0], layer.bias, dtype=np.float32)


def _squeeze_leading(shape) -> Tuple[int, ...]:
    """Drop leading 1s: legacy (V1) caffemodels store an fc weight as (1, 1, out, in)."""
    s = tuple(int(d) for d in shape)
    while len(s) > 1 and s[0] == 1:
        s = s[1:]
    return s


def read_weights(path: str, net: str, layers: Sequence[Layer]) -> Params:
    """A caffemodel's blobs for ``layers``, reshaped to Caffe's current shapes; InputError if they do not match."""
    from caffe_dc.pycaffe.caffemodel import load_params

    params = load_params(path)
    missing = [l.name for l in layers if l.name not in params]
    if missing:
        raise InputError("%s is not a %s caffemodel: it has no layer %s (its layers: %s)"
                         % (path, net, ", ".join(repr(m) for m in missing[:3]), ", ".join(list(params)[:12])))
    out: Params = collections.OrderedDict()
    for l in layers:
        blobs = params[l.name].blobs
        w = blobs[0]
        if _squeeze_leading(w.shape) != _squeeze_leading(l.shape):
            raise InputError("%s: layer %r has weights of shape %s, but %s's %s is %s"
                             % (path, l.name, tuple(w.shape), net, l.name, l.shape))
        if len(blobs) > 1 and blobs[1].size != l.shape[0]:
            raise InputError("%s: layer %r has %d biases, expected %d" % (path, l.name, blobs[1].size, l.shape[0]))
        rest = [b.reshape(l.shape[0]) if i == 0 else b for i, b in enumerate(blobs[1:])]
        out[l.name] = LayerParams(l.type, [np.ascontiguousarray(w, dtype=np.float32).reshape(l.shape)] + rest)
    return out


# ============================================================================ compression

def quantize_sampled(w: np.ndarray, bits: int, sample: int, seed: int = 0,
                     init=quantization.Init.LINEAR) -> Tuple[np.ndarray, np.ndarray]:
    """``quantize_layer`` with the k-means *fit* on a random sample of the nonzero weights.

    For speed only (k-means on the 3.4M kept weights of AlexNet fc6 takes
    15-30 s with scikit-learn on 2 cores). ``quantization.kmeans`` fits
    ``sample`` of them; then *every* nonzero weight is assigned to its
    nearest centroid and each centroid moves to the mean of all the weights
    assigned to it (one M-step on the full layer). Measured on a synthetic
    fc6, a 2**18 sample gives a ~4% larger quantization error than the full
    fit and changes the layer's size by a fraction of a percent; the default
    is therefore the full fit (``fit_sample=None`` in ``quantize``).
    Same output contract as ``quantize_layer``: codebook[0] = 0, codes 0
    exactly where w is 0, 2**bits entries, unused slots repeat the last.
    """
    bits = quantization.check_bits(bits)
    K = 1 << bits
    flat = np.asarray(w, dtype=np.float32).ravel()
    nz = np.flatnonzero(flat)
    v = flat[nz]
    if v.size <= sample:
        return quantization.quantize_layer(w, bits, init, seed)
    rng = np.random.default_rng(seed)
    pick = rng.choice(v.size, size=int(sample), replace=False)
    # The extremes anchor the linear initialisation: keep them in the sample.
    pick[:2] = [int(np.argmin(v)), int(np.argmax(v))]
    c, _ = quantization.kmeans(v[pick], K - 1, init, seed)
    c64 = c.astype(np.float64)
    lab = np.searchsorted((c64[:-1] + c64[1:]) / 2.0, v).astype(np.intp)
    cnt = np.bincount(lab, minlength=c.size)
    sums = np.bincount(lab, weights=v, minlength=c.size)
    used = cnt > 0
    c = (sums[used] / cnt[used]).astype(np.float32)           # M-step over every weight
    lab = (np.cumsum(used) - 1)[lab]                          # drop clusters no weight chose
    c[c == 0] = quantization.NONZERO_EPS
    codebook = np.empty(K, dtype=np.float32)
    codebook[0] = 0.0
    codebook[1:1 + c.size] = c
    codebook[1 + c.size:] = c[-1]
    codes = np.zeros(flat.size, dtype=quantization.code_dtype(bits))
    codes[nz] = lab + 1
    return codebook, codes.reshape(np.shape(w))


class LayerResult(NamedTuple):
    name: str
    type: str
    shape: Tuple[int, ...]
    weights: int
    kept: int
    density_target: float
    bits: int
    index_bits: int
    distinct: int             # distinct nonzero weight values after quantization (<= 2**bits - 1)
    prune_s: float
    quantize_s: float
    fit: str                  # "all N nonzero weights" or "sample of N"

    def to_dict(self) -> dict:
        d = self._asdict()
        d["shape"] = list(self.shape)
        d["density"] = self.kept / self.weights if self.weights else None
        return d


def prune_in_place(w: np.ndarray, density: float) -> Tuple[int, float]:
    """Zero all but the ``density`` share of largest-|w| weights (``density_mask``); returns (kept, seconds).

    In place, so a layer never has a second float32 copy.
    """
    t0 = time.perf_counter()
    mask = pruning.density_mask(w, density)
    np.copyto(w, np.float32(0), where=~mask)
    del mask
    kept = int(np.count_nonzero(w))   # not the mask's count: a layer already sparser keeps its zeros
    return kept, time.perf_counter() - t0


def quantize(w: np.ndarray, bits: int, seed: int = 0,
             fit_sample: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, str, float]:
    """(codebook, codes, how k-means was fitted, seconds): ``quantize_layer``, linear init, as the paper.

    With ``fit_sample`` and more nonzero weights than that, the fit runs on
    a sample (``quantize_sampled``).
    """
    t0 = time.perf_counter()
    kept = int(np.count_nonzero(w))
    if fit_sample and kept > fit_sample:
        cb, codes = quantize_sampled(w, bits, int(fit_sample), seed)
        fit = "a sample of %d" % fit_sample
    else:
        cb, codes = quantization.quantize_layer(w, bits, quantization.Init.LINEAR, seed)
        fit = "all %d" % kept
    return cb, codes, fit, time.perf_counter() - t0


def _distinct(codebook: np.ndarray, codes: np.ndarray) -> int:
    """Distinct nonzero values in codebook[codes], from the code histogram (no sort of the layer)."""
    used = np.flatnonzero(np.bincount(codes.ravel(), minlength=codebook.size))
    used = used[used > 0]
    return int(np.unique(codebook[used]).size)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StorageResult(NamedTuple):
    summary: dict             # everything JSON-able: settings, per-layer, stages, totals, paper
    stats: object             # codec.ModelStats of the blob
    blob: bytes               # the .dcz file
    decoded: Params           # the decoded layers (weights and biases), verified bit-exact


def _mb(nbytes: float) -> float:
    """Decimal megabytes, as the paper counts: AlexNet's 61M float32 weights are its "240 MB"."""
    return nbytes / 1e6


def _paper_mb(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"MB": 1.0, "KB": 1e-3}[unit]


def run_storage(net: str, weights: Optional[str] = None, seed: int = DEFAULT_SEED, shrink: int = 1,
                fit_sample: Optional[int] = None, only: Optional[Sequence[str]] = None,
                log: Callable[[str], None] = print) -> StorageResult:
    """Prune, quantize, encode and decode ``net`` at the paper's per-layer settings.

    ``weights``: a caffemodel of the net (None: synthetic weights, see the
    module docstring). ``shrink``: divide channel counts (tests).
    ``fit_sample``: fit k-means on a sample of this many weights per layer
    (None: on all, as ``quantize_layer``). ``only``: compress these layers
    only. Every progress line goes through ``log`` and names the weights'
    source. The decoded model is checked bit for bit against the quantized
    one; a mismatch raises ``InputError`` (it would be an encoder bug).
    """
    net = check_net(net)
    layers = net_layers(net, shrink, only)
    label = source_label(weights)
    tag = "[%s | %s]" % (net, label)
    say = lambda msg: log("%s %s" % (tag, msg))
    density, bits, ib = paper.PAPER_DENSITY[net], paper.PAPER_BITS[net], paper.PAPER_INDEX_BITS[net]
    if fit_sample is not None and (isinstance(fit_sample, bool) or int(fit_sample) < MIN_FIT_SAMPLE):
        raise InputError("--fit-sample must be at least %d weights, got %r" % (MIN_FIT_SAMPLE, fit_sample))
    t_start = time.perf_counter()
    rss = {}
    real = read_weights(weights, net, layers) if weights is not None else None
    if real is not None:
        say("read %s: %d layers match %s's shapes" % (weights, len(layers), net))

    qparams: Params = collections.OrderedDict()
    expected: Params = collections.OrderedDict()
    results: List[LayerResult] = []
    for i, l in enumerate(layers):
        if real is not None:
            lp = real.pop(l.name)                    # free the caffemodel's copy as we go
            w, rest = lp.blobs[0], list(lp.blobs[1:])
            if not w.flags.writeable:
                w = w.copy()
        else:
            w, bias = synthetic_layer(l, seed, i)
            rest = [bias]
        kept, tp = prune_in_place(w, density[l.name])
        say("prune    %-7s %10d -> %9d kept (%5.2f%%, paper %g%%)  %6.2f s"
            % (l.name, l.size, kept, 100.0 * kept / l.size, 100 * density[l.name], tp))
        cb, codes, fit, tq = quantize(w, bits[l.name], seed, fit_sample)
        del w
        wq = cb[codes]
        lr = LayerResult(l.name, l.type, l.shape, l.size, kept, density[l.name], bits[l.name], ib,
                         _distinct(cb, codes), tp, tq, fit)
        results.append(lr)
        qparams[l.name] = LayerParams(l.type, [wq] + rest)
        qparams[blob_name(l.name, CODEBOOK)] = LayerParams("Parameter", [cb])
        qparams[blob_name(l.name, CODES)] = LayerParams("Parameter", [codes])
        expected[l.name] = qparams[l.name]
        say("quantize %-7s %d bits: %3d distinct values (k-means fit on %s)  %6.2f s"
            % (l.name, bits[l.name], lr.distinct, fit, tq))
    rss["after_quantize"] = peak_rss_mb()
    prune_s = sum(r.prune_s for r in results)
    quant_s = sum(r.quantize_s for r in results)
    say("prune    total %.2f s; quantize total %.2f s" % (prune_s, quant_s))

    meta = {"weights": label, "seed": int(seed), "shrink": int(shrink)}
    t0 = time.perf_counter()
    blob, stats = encoding.encode_params(qparams, net, {l.name: ib for l in layers}, meta=meta)
    encode_s = time.perf_counter() - t0
    rss["after_encode"] = peak_rss_mb()
    del qparams                                  # codes and codebooks: the blob has them now
    say("encode   %d layers, index bits %d -> %d bytes  %.2f s" % (len(layers), ib, len(blob), encode_s))

    t0 = time.perf_counter()
    decoded, dstats, dmeta = encoding.decode_bytes(blob)
    decode_s = time.perf_counter() - t0
    rss["after_decode"] = peak_rss_mb()
    say("decode   %d bytes -> %d layers  %.2f s" % (len(blob), len(decoded), decode_s))

    t0 = time.perf_counter()
    extra = [n for n in decoded if n not in expected]
    if extra:
        raise InputError("decoded blob has unexpected layers %s" % extra)
    checked = encoding.verify_equal(expected, decoded, "decoded %s vs quantized" % net)
    verify_s = time.perf_counter() - t0
    del expected
    say("verify   decoded == quantized, bit for bit (%d values)  %.2f s" % (checked, verify_s))
    total_s = time.perf_counter() - t_start

    t = stats.totals()
    dense_b, file_b = t["original_bits"] / 8.0, float(t["file_bytes"])
    r1, tot = paper.TABLE1[net], paper.total_row(net)
    p_dense, p_comp = _paper_mb(r1.params_ref), _paper_mb(r1.params)
    summary = {
        "net": net, "weights": label, "synthetic": weights is None,
        "weights_file": weights, "seed": int(seed), "shrink": int(shrink),
        "distribution": ("i.i.d. Laplace per layer, std = the Caffe filler's of the published prototxt; "
                         "biases = the bias filler constant") if weights is None else None,
        "kmeans_fit": "full" if not fit_sample else "sample of %d per layer, then all weights assigned" % fit_sample,
        "index_bits": ib,
        "layers": [r.to_dict() for r in results],
        "seconds": {"prune": prune_s, "quantize": quant_s, "encode": encode_s, "decode": decode_s,
                    "verify": verify_s, "total": total_s},
        "peak_rss_mb": peak_rss_mb(), "rss_mb_by_stage": rss,
        "verified_values": checked,
        "totals": {
            "dense_mb": _mb(dense_b), "compressed_mb": _mb(file_b), "ratio": dense_b / file_b,
            "pruned_ratio": 1.0 / t["density"], "pq_ratio": 1.0 / t["rate_pq"], "pqh_ratio": 1.0 / t["rate_pqh"],
            "density": t["density"], "file_bytes": int(t["file_bytes"]),
        },
        "paper": {"table": paper.TABLE_NUMBER[net], "dense_mb": p_dense, "compressed_mb": p_comp,
                  "ratio": r1.rate, "pruned_ratio": tot.x_prune, "pq_ratio": tot.x_pq, "density": tot.density},
        "breakdown": breakdown(stats, net, with_paper=shrink == 1),
        "stats": stats.to_dict(),
    }
    return StorageResult(summary, stats, blob, decoded)


# ============================================================================ reports

def totals_rows(summary: dict) -> List[list]:
    """Whole-net figures, ours beside the paper's Table 1 / total row."""
    o, p = summary["totals"], summary["paper"]
    return [
        ["dense float32", "%.1f MB" % o["dense_mb"], "%g MB" % p["dense_mb"]],
        ["compressed (P+Q+H, the .dcz file)", "%.2f MB" % o["compressed_mb"], "%g MB" % p["compressed_mb"]],
        ["compression ratio", "%.1fx" % o["ratio"], "%gx" % p["ratio"]],
        ["after pruning only", "%.1fx (%.1f%% kept)" % (o["pruned_ratio"], 100 * o["density"]),
         "%gx (%g%% kept)" % (p["pruned_ratio"], 100 * p["density"])],
        ["after P+Q (fixed-width codes)", "%.1fx" % o["pq_ratio"], "%gx" % p["pq_ratio"]],
    ]


def breakdown(stats, net: str, with_paper: bool = True) -> List[dict]:
    """Where each layer's bytes go -- Huffman-coded weight codes, index gaps, the rest -- ours and the paper's.

    The paper prints no byte counts, but its columns imply them for a
    layer of n weights: entries (fillers included) = (rate P+Q * 32n -
    2**wb * 32) / (wb + ib), code bits = entries * (wb +H), gap bits =
    entries * (ib +H), and the rest (codebook, tables) = rate P+Q+H * 32n
    minus both. The printed rates have 2-3 significant digits, so these
    are good to a few percent (a small negative filler count is that
    rounding). Fillers per kept weight show how clustered the kept
    positions are (fewer fillers: more structure). ``with_paper=False``
    (shrunk test nets) leaves the paper's side out.
    """
    rows = {r.layer: r for r in paper.layer_rows(net)} if with_paper else {}
    out = []
    for b in stats.quantized:
        o = {"layer": b.name, "weights": b.weights, "entries": b.entries,
             "fillers_per_kept": b.fillers / b.nonzero if b.nonzero else None,
             "code_bytes": b.code_bits / 8.0, "gap_bytes": b.gap_bits / 8.0,
             "other_bytes": (b.pqh_bits - b.code_bits - b.gap_bits) / 8.0, "total_bytes": b.pqh_bits / 8.0}
        p = rows.get(b.name)
        if p is not None:
            n = b.weights
            e = (p.rate_pq * 32 * n - (1 << int(p.wbits_pq)) * 32) / (p.wbits_pq + p.ibits_pq)
            kept = p.density * n
            total = p.rate_pqh * 32 * n / 8.0
            o["paper"] = {"entries": e, "fillers_per_kept": (e - kept) / kept if kept else None,
                          "code_bytes": e * p.wbits_h / 8.0, "gap_bytes": e * p.ibits_h / 8.0,
                          "other_bytes": total - e * (p.wbits_h + p.ibits_h) / 8.0, "total_bytes": total}
        out.append(o)
    return out


def _sum(rows: List[dict], key: str, paper_side: bool = False) -> Optional[float]:
    vals = [(r.get("paper") or {}).get(key) if paper_side else r.get(key) for r in rows]
    return None if any(v is None for v in vals) else float(sum(vals))


def breakdown_rows(summary: dict) -> List[list]:
    kb = lambda v: "–" if v is None else "%.*f" % (0 if abs(v) >= 1e5 else 1, v / 1e3)
    pair = lambda a, b, f: "%s / %s" % (f(a), f(b))
    fpk = lambda v: "–" if v is None else "%.2f" % v
    rows = []
    bd = summary["breakdown"]
    for r in bd + [None]:
        if r is None:  # total
            name, o, p = "total", {k: _sum(bd, k) for k in ("code_bytes", "gap_bytes", "other_bytes", "total_bytes")}, \
                {k: _sum(bd, k, True) for k in ("code_bytes", "gap_bytes", "other_bytes", "total_bytes")}
            f_o = _sum(bd, "entries") / max(1, sum(l["kept"] for l in summary["layers"])) - 1
            f_p = None
            if all(r2.get("paper") for r2 in bd):
                kept_p = sum(l["density_target"] * l["weights"] for l in summary["layers"])
                f_p = _sum(bd, "entries", True) / kept_p - 1
        else:
            name, o, p = r["layer"], r, r.get("paper") or {}
            f_o, f_p = r["fillers_per_kept"], p.get("fillers_per_kept")
        rows.append([name, pair(f_o, f_p, fpk), pair(o["code_bytes"], p.get("code_bytes"), kb),
                     pair(o["gap_bytes"], p.get("gap_bytes"), kb), pair(o["other_bytes"], p.get("other_bytes"), kb),
                     pair(o["total_bytes"], p.get("total_bytes"), kb)])
    return rows


BREAKDOWN_HEADERS = ["layer", "fillers per kept, ours / paper", "weight codes +H KB", "index gaps +H KB",
                     "codebook, tables KB", "layer total KB"]


def gap_sentence(summary: dict) -> Optional[str]:
    """One line: how much larger or smaller our layers are than the paper's, by stream."""
    bd = summary["breakdown"]
    if not bd or not all(r.get("paper") for r in bd):
        return None
    d = {k: (_sum(bd, k) - _sum(bd, k, True)) / 1e6 for k in ("total_bytes", "code_bytes", "gap_bytes", "other_bytes")}
    kept = sum(l["kept"] for l in summary["layers"])
    kept_p = sum(l["density_target"] * l["weights"] for l in summary["layers"])
    return ("Compressed layers, ours minus the paper's (%s): %+.2f MB = weight codes %+.2f MB + index gaps %+.2f MB "
            "(%.2f vs %.2f fillers per kept weight) + codebooks and tables %+.2f MB."
            % (summary["weights"], d["total_bytes"], d["code_bytes"], d["gap_bytes"],
               _sum(bd, "entries") / kept - 1, _sum(bd, "entries", True) / kept_p - 1, d["other_bytes"]))


def stage_rows(summary: dict) -> List[list]:
    s = summary["seconds"]
    return [[k, "%.2f" % s[k]] for k in ("prune", "quantize", "encode", "decode", "verify", "total")]


def text_report(result: StorageResult) -> str:
    """The Table 4/5 comparison and the totals, every line tagged with the weights' source."""
    from caffe_dc.report.storage_table import storage_text
    from caffe_dc.base.tables import text_table

    s = result.summary
    w = s["weights"]
    parts = ["Table %d, ours / paper (%s):" % (s["paper"]["table"], w), storage_text(result.stats, s["net"]), "",
             "totals (%s; MB = 10^6 bytes, as the paper):" % w,
             text_table(["", "ours", "paper"], totals_rows(s)), "",
             "where the bytes go, ours / paper (implied by its columns), %s:" % w,
             text_table(BREAKDOWN_HEADERS, breakdown_rows(s)[-1:])]
    gap = gap_sentence(s)
    if gap:
        parts.append(gap)
    parts += ["", "seconds (%s): %s; peak RSS %.0f MB"
              % (w, ", ".join("%s %s" % tuple(r) for r in stage_rows(s)), s["peak_rss_mb"])]
    tag = "[%s | %s]" % (s["net"], w)
    return "\n".join("%s %s" % (tag, line) if line else tag for line in "\n".join(parts).split("\n"))


def markdown_report(result: StorageResult, command: Optional[str] = None) -> str:
    from caffe_dc.report.storage_table import storage_markdown
    from caffe_dc.base.tables import markdown_table

    s = result.summary
    net, label = s["net"], s["weights"]
    title = {"alexnet": "AlexNet", "vgg16": "VGG-16"}[net]
    out = ["# %s storage at the paper's settings (%s)" % (title, label), ""]
    if s["synthetic"]:
        out += ["**These figures are for synthetic weights**, not for a trained %s: %s (seed %d). "
                "See `caffe_dc/storage.py` for why this distribution and what it can show: the pipeline "
                "(pruning to the paper's W%%, k-means with the paper's bits, the `.dcz` encoder with the paper's "
                "index bits) is the real one; the Huffman gains depend on the weights' distribution and on the "
                "structure of a trained net, which i.i.d. weights lack." % (title, s["distribution"], s["seed"]), ""]
    else:
        out += ["Weights: `%s` (pruned and quantized post hoc, no retraining)." % s["weights_file"], ""]
    if s["shrink"] > 1:
        out += ["Channel counts divided by %d (a test run): sizes are not comparable to the paper's." % s["shrink"], ""]
    if command:
        out += ["Command: `%s`" % command, ""]

    out += ["## Totals (%s)" % label, "", markdown_table(["", "ours", "paper"], totals_rows(s)), "",
            "MB are 10^6 bytes, as the paper counts (%s's dense float32 parameters are %.1f MB: its \"%g MB\"). "
            "Ours includes everything in the file: biases (raw float32), headers, CRCs, Huffman tables."
            % (title, s["totals"]["dense_mb"], s["paper"]["dense_mb"]), ""]
    gap = gap_sentence(s)
    if gap:
        out += [gap, ""]

    out += ["## Per layer, ours / paper Table %d (%s)" % (s["paper"]["table"], label), "",
            storage_markdown(result.stats, net), ""]

    out += ["## Where the bytes go (%s)" % label, "",
            "Ours is measured; the paper's is implied by its columns (see `storage.breakdown`): entries = "
            "(rate P+Q x 32n - codebook) / (wb + ib), stream bits = entries x bits +H. Fillers per kept weight "
            "measure how clustered the kept positions are; weight-code bits how skewed the codebook usage is. "
            "The paper prints rates to 2-3 digits, so its implied bytes are good to a few percent; a negative "
            "value on its side is that rounding.", "",
            markdown_table(BREAKDOWN_HEADERS, breakdown_rows(s)), ""]

    rss = s["rss_mb_by_stage"]
    out += ["## Run (%s)" % label, "", markdown_table(["stage", "seconds"], stage_rows(s)), "",
            "Peak RSS: %.0f MB (after quantize %.0f, after encode %.0f, after decode %.0f). k-means fit: %s. "
            "Decoded weights verified bit-exact against the quantized ones (%d values)."
            % (s["peak_rss_mb"], rss["after_quantize"], rss["after_encode"], rss["after_decode"],
               s["kmeans_fit"], s["verified_values"]), "",
            markdown_table(["layer", "shape", "kept", "W% ours / paper", "bits", "distinct values", "prune s",
                            "quantize s"],
                           [[r["name"], "x".join(map(str, r["shape"])), r["kept"],
                             "%.2f%% / %g%%" % (100 * r["density"], 100 * r["density_target"]), r["bits"],
                             r["distinct"], "%.2f" % r["prune_s"], "%.2f" % r["quantize_s"]] for r in s["layers"]]),
            ""]
    return "\n".join(out)


def default_out(net: str) -> str:
    return os.path.join("runs", "storage-%s" % check_net(net))


def write_outputs(result: StorageResult, out_dir: str, json_path: Optional[str] = None,
                  command: Optional[str] = None) -> Dict[str, str]:
    """``storage.json``, ``storage.md`` and ``<net>.dcz`` into ``out_dir`` (atomically); and ``json_path``."""
    import json

    os.makedirs(out_dir, exist_ok=True)
    net = result.summary["net"]
    paths = {"json": os.path.join(out_dir, "storage.json"), "markdown": os.path.join(out_dir, "storage.md"),
             "blob": os.path.join(out_dir, "%s.dcz" % net)}
    doc = dict(result.summary, command=command, files=paths)
    text = json.dumps(json_safe(doc), indent=2, allow_nan=False).encode()
    atomic_write(paths["json"], text)
    atomic_write(paths["markdown"], markdown_report(result, command).encode())
    atomic_write(paths["blob"], result.blob)
    if json_path:
        d = os.path.dirname(json_path)
        if d:
            os.makedirs(d, exist_ok=True)
        atomic_write(json_path, text)
        paths["json_copy"] = json_path
    return paths


def json_safe(o):
    """JSON-safe copy: numpy scalars to Python, tuples to lists, NaN/inf to None."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    return o
