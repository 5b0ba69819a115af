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
the codebook. ``density_mask`` makes float32 temporaries of the layer it
prunes (|w| and its partition: about 0.8 GB for VGG fc6); nothing else of
that size is made.

This module computes; ``report.storage`` prints and writes the results.
"""
from __future__ import annotations

import collections
import math
import os
import resource
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.algorithms import pruning, quantization
from caffe_dc.base import paper
from caffe_dc.base.errors import InputError
from caffe_dc.base.limits import check_bits
from caffe_dc.base.params import LayerParams, Params
from caffe_dc.pycaffe import nets
from caffe_dc.report import storage as storage_report
from caffe_dc.codec import frontend

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
    """The canonical name (``nets.canonical``) of a net this module has layers for; else an InputError."""
    try:
        n = nets.canonical(net)
    except InputError:
        n = None
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
    Same output contract as ``quantize_layer``, which lays out the result.
    """
    bits = check_bits(bits)
    flat = np.asarray(w, dtype=np.float32).ravel()
    nz = np.flatnonzero(flat)
    v = flat[nz]
    if v.size <= sample:
        return quantization.quantize_layer(w, bits, init, seed)
    rng = np.random.default_rng(seed)
    pick = rng.choice(v.size, size=int(sample), replace=False)
    # The extremes anchor the linear initialisation: keep them in the sample.
    pick[:2] = [int(np.argmin(v)), int(np.argmax(v))]
    c, _ = quantization.kmeans(v[pick], (1 << bits) - 1, init, seed)
    lab = quantization.nearest(v, c)
    cnt = np.bincount(lab, minlength=c.size)
    means = (np.bincount(lab, weights=v, minlength=c.size) / np.maximum(cnt, 1)).astype(np.float32)
    means[means == 0] = quantization.NONZERO_EPS       # a kept weight must not read as pruned
    # At most 2**bits - 1 distinct values: quantize_layer keeps them exactly (no fit) and gives them
    # the codebook and codes layout of a full fit; centroids no weight chose simply do not appear.
    codebook, kept_codes = quantization.quantize_layer(means[lab], bits, init, seed)
    codes = np.zeros(flat.size, dtype=kept_codes.dtype)
    codes[nz] = kept_codes
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


def prune(w: np.ndarray, density: float) -> Tuple[int, float]:
    """(kept, seconds): ``pruning.prune_in_place``, timed."""
    t0 = time.perf_counter()
    kept = pruning.prune_in_place(w, density)
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


def _check_fit_sample(fit_sample: Optional[int]) -> None:
    if fit_sample is not None and (isinstance(fit_sample, bool) or int(fit_sample) < MIN_FIT_SAMPLE):
        raise InputError("--fit-sample must be at least %d weights, got %r" % (MIN_FIT_SAMPLE, fit_sample))


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _compress_layers(net: str, layers: Sequence[Layer], real: Optional[Params], seed: int,
                     fit_sample: Optional[int], say: Callable[[str], None]) -> Tuple[Params, List[LayerResult]]:
    """Prune and quantize one layer at a time: (weights, codebook and codes entries for the encoder, results)."""
    density, bits, ib = paper.PAPER_DENSITY[net], paper.PAPER_BITS[net], paper.PAPER_INDEX_BITS[net]
    qparams: Params = collections.OrderedDict()
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
        kept, tp = prune(w, density[l.name])
        say("prune    %-7s %10d -> %9d kept (%5.2f%%, paper %g%%)  %6.2f s"
            % (l.name, l.size, kept, 100.0 * kept / l.size, 100 * density[l.name], tp))
        cb, codes, fit, tq = quantize(w, bits[l.name], seed, fit_sample)
        del w
        lr = LayerResult(l.name, l.type, l.shape, l.size, kept, density[l.name], bits[l.name], ib,
                         _distinct(cb, codes), tp, tq, fit)
        results.append(lr)
        qparams[l.name] = LayerParams(l.type, [cb[codes]] + rest)
        quantization.attach_codebook(qparams, l.name, cb, codes)
        say("quantize %-7s %d bits: %3d distinct values (k-means fit on %s)  %6.2f s"
            % (l.name, bits[l.name], lr.distinct, fit, tq))
    return qparams, results


def _verify(expected: Params, decoded: Params, net: str) -> int:
    extra = [n for n in decoded if n not in expected]
    if extra:
        raise InputError("decoded blob has unexpected layers %s" % extra)
    return frontend.verify_equal(expected, decoded, "decoded %s vs quantized" % net)


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
    _check_fit_sample(fit_sample)
    label = source_label(weights)
    tag = "[%s | %s]" % (net, label)
    say = lambda msg: log("%s %s" % (tag, msg))
    t_start = time.perf_counter()
    real = read_weights(weights, net, layers) if weights is not None else None
    if real is not None:
        say("read %s: %d layers match %s's shapes" % (weights, len(layers), net))

    qparams, results = _compress_layers(net, layers, real, seed, fit_sample, say)
    rss = {"after_quantize": peak_rss_mb()}
    seconds = {"prune": sum(r.prune_s for r in results), "quantize": sum(r.quantize_s for r in results)}
    say("prune    total %.2f s; quantize total %.2f s" % (seconds["prune"], seconds["quantize"]))

    ib = paper.PAPER_INDEX_BITS[net]
    meta = {"weights": label, "seed": int(seed), "shrink": int(shrink)}
    (blob, stats), seconds["encode"] = _timed(frontend.encode_params, qparams, net, {l.name: ib for l in layers},
                                              meta=meta)
    rss["after_encode"] = peak_rss_mb()
    expected = collections.OrderedDict((l.name, qparams[l.name]) for l in layers)
    del qparams                                  # codes and codebooks: the blob has them now
    say("encode   %d layers, index bits %d -> %d bytes  %.2f s" % (len(layers), ib, len(blob), seconds["encode"]))

    (decoded, _, _), seconds["decode"] = _timed(frontend.decode_bytes, blob)
    rss["after_decode"] = peak_rss_mb()
    say("decode   %d bytes -> %d layers  %.2f s" % (len(blob), len(decoded), seconds["decode"]))

    checked, seconds["verify"] = _timed(_verify, expected, decoded, net)
    del expected
    say("verify   decoded == quantized, bit for bit (%d values)  %.2f s" % (checked, seconds["verify"]))
    seconds["total"] = time.perf_counter() - t_start

    summary = _summary(net, weights, label, seed, shrink, fit_sample, results, stats, seconds, rss, checked)
    return StorageResult(summary, stats, blob, decoded)


def _summary(net: str, weights: Optional[str], label: str, seed: int, shrink: int, fit_sample: Optional[int],
             results: Sequence[LayerResult], stats, seconds: dict, rss: dict, checked: int) -> dict:
    """Everything a report needs, JSON-able: settings, per-layer results, stage times, totals beside the paper's."""
    t = stats.totals()
    dense_b, file_b = t["original_bits"] / 8.0, float(t["file_bytes"])
    r1, tot = paper.TABLE1[net], paper.total_row(net)
    return {
        "net": net, "weights": label, "synthetic": weights is None,
        "weights_file": weights, "seed": int(seed), "shrink": int(shrink),
        "distribution": ("i.i.d. Laplace per layer, std = the Caffe filler's of the published prototxt; "
                         "biases = the bias filler constant") if weights is None else None,
        "kmeans_fit": "full" if not fit_sample else "sample of %d per layer, then all weights assigned" % fit_sample,
        "index_bits": paper.PAPER_INDEX_BITS[net],
        "layers": [r.to_dict() for r in results],
        "seconds": {k: seconds[k] for k in ("prune", "quantize", "encode", "decode", "verify", "total")},
        "peak_rss_mb": peak_rss_mb(), "rss_mb_by_stage": rss,
        "verified_values": checked,
        "totals": {
            "dense_mb": _mb(dense_b), "compressed_mb": _mb(file_b), "ratio": dense_b / file_b,
            "pruned_ratio": 1.0 / t["density"], "pq_ratio": 1.0 / t["rate_pq"], "pqh_ratio": 1.0 / t["rate_pqh"],
            "density": t["density"], "file_bytes": int(t["file_bytes"]),
        },
        "paper": {"table": paper.TABLE_NUMBER[net], "dense_mb": _paper_mb(r1.params_ref),
                  "compressed_mb": _paper_mb(r1.params), "ratio": r1.rate, "pruned_ratio": tot.x_prune,
                  "pq_ratio": tot.x_pq, "density": tot.density},
        "breakdown": storage_report.breakdown(stats, net, with_paper=shrink == 1),
        "stats": stats.to_dict(),
    }


def default_out(net: str) -> str:
    return os.path.join("runs", "storage-%s" % check_net(net))
