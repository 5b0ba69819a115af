#!/usr/bin/env python3
"""Benchmark the post-hoc encode path on a ResNet-50-like model (SYNTHETIC weights).

What ``caffe-dc encode`` does with a caffemodel that has no codebooks:
magnitude pruning to a density (``--density``, default 1.0: nothing pruned,
every weight goes through k-means), k-means quantization of every conv and
fc layer at 8 bits (``codec.frontend.post_hoc``), then the encoder
(``codec.frontend.encode_params``: codebook/codes check, relative-index
entries, Huffman coding). The model has the layer shapes of ResNet-50 at
half width (53 convolutions and the classifier, ~6.4M weights, the
projection shortcuts included); weights are i.i.d. Laplace with a He-like
scale per layer, so the k-means problem (millions of distinct values, 255
clusters) is that of a real layer, while sizes are indicative only.

Measured per phase: wall time and the process's CPU time (the machine may
be shared: the CPU time is the steadier figure; the load average is
recorded), the k-means alone (its share of the quantization), and the
bit-exact round trip of the file. ``--sklearn`` also times scikit-learn's KMeans on the largest
layer, as the quantizer ran before ``quantization.lloyd_1d``.

    ./dc dev python3 /src/tools/bench_posthoc.py [--out runs/bench/posthoc.json] [--density D]

With ``--calib``, it times ``encode --calib`` on a real net instead and scores the written file on a
test split (``calibrated``):

    ./dc dev python3 /src/tools/bench_posthoc.py PROTOTXT MODEL --calib DATA [--images N] \\
        [--test TEST_IMAGES_IDX] [--out F] [encode's options, e.g. --max-drop 0.5]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffe_dc.algorithms import quantization  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.base.params import LayerParams  # noqa: E402
from caffe_dc.codec import model as codec  # noqa: E402
from caffe_dc.codec import frontend  # noqa: E402
from caffe_dc.base import provenance  # noqa: E402

BITS = 8
SCALE = 0.00390625    # the LeNets' transform_param scale: pixels to [0, 1)
BN_BATCHES = 30       # batches that re-estimate a trained ResNet's BatchNorm statistics


def resnet50_shapes(width: float = 0.5, channels: int = 3, classes: int = 1000):
    """(name, type, weight shape) of ResNet-50's conv and fc layers, channels scaled by ``width``."""
    return [(n, t, shape) for n, t, shape, _, _ in resnet50_layers(width, channels, classes)]


def resnet50_layers(width: float = 0.5, channels: int = 3, classes: int = 1000):
    """ResNet-50's conv and fc layers in net order, channels scaled by ``width``: (name, type, weight
    shape, stride, the layer it reads). A block's first convolution and its projection shortcut
    (``_branch1``) carry the stage's stride, as in the original Caffe model."""
    ch = lambda c: max(1, int(round(c * width)))
    out = [("conv1", "Convolution", (ch(64), channels, 7, 7), 2, "data")]
    cin, x = ch(64), "pool1"
    for stage, (mid, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=2):
        m, o = ch(mid), ch(4 * mid)
        for b in range(blocks):
            name = "res%d%s" % (stage, "abcdef"[b])
            stride = 2 if b == 0 and stage > 2 else 1
            if b == 0:
                out.append((name + "_branch1", "Convolution", (o, cin, 1, 1), stride, x))
            out += [(name + "_branch2a", "Convolution", (m, cin, 1, 1), stride, x),
                    (name + "_branch2b", "Convolution", (m, m, 3, 3), 1, name + "_branch2a"),
                    (name + "_branch2c", "Convolution", (o, m, 1, 1), 1, name + "_branch2b")]
            cin, x = o, name
    out.append(("fc%d" % classes, "InnerProduct", (classes, cin), 1, "pool5"))
    return out


def resnet50_prototxt(width: float = 0.5, channels: int = 3, size: int = 224, classes: int = 1000,
                      batchnorm: bool = False, batch: int = 1, train: bool = False) -> str:
    """The prototxt of ``resnet50_layers``: wired as ResNet-50 wires them (ReLU after each convolution
    but a block's last, an Eltwise sum with the shortcut, then a ReLU; global average pooling).

    ``batchnorm``: each convolution without a bias, followed by BatchNorm and Scale as in the original
    model, with Caffe's MSRA filler; ``train``: a label input and SoftmaxWithLoss instead of Softmax."""
    layer = lambda name, t, bottoms, top, body="": 'layer { name: "%s" type: "%s" %s top: "%s" %s }\n' % (
        name, t, " ".join('bottom: "%s"' % b for b in bottoms), top, body)
    text = 'name: "resnet50-x%.2f"\n' % width
    text += layer("data", "Input", [], "data", "input_param { shape { dim: %d dim: %d dim: %d dim: %d } }"
                  % (batch, channels, size, size))
    if train:
        text += layer("label", "Input", [], "label", "input_param { shape { dim: %d } }" % batch)
    block = shortcut = "data"
    for name, t, shape, stride, bottom in resnet50_layers(width, channels, classes):
        if t == "InnerProduct":
            text += layer("pool5", "Pooling", [block], "pool5", "pooling_param { pool: AVE global_pooling: true }")
            text += layer(name, t, [bottom], name, "inner_product_param { num_output: %d%s }"
                          % (shape[0], ' weight_filler { type: "msra" }' if batchnorm else ""))
            break
        k = shape[2]
        text += layer(name, t, [bottom], name, "convolution_param { num_output: %d kernel_size: %d pad: %d stride: %d%s }"
                      % (shape[0], k, k // 2, stride, ' bias_term: false weight_filler { type: "msra" }' if batchnorm else ""))
        if batchnorm:
            text += layer("bn_" + name, "BatchNorm", [name], name) + layer(
                "scale_" + name, "Scale", [name], name, "scale_param { bias_term: true }")
        if name.endswith("_branch1"):
            shortcut = name
        elif name.endswith("_branch2a") and shortcut != name[:-2] + "1":
            shortcut = bottom                   # no projection: the block's input itself
        if name.endswith("_branch2c"):
            block = name.split("_")[0]
            text += layer(block, "Eltwise", [shortcut, name], block) + layer(block + "_relu", "ReLU", [block], block)
        elif not name.endswith("_branch1"):
            text += layer(name + "_relu", "ReLU", [name], name)
        if name == "conv1":
            text += layer("pool1", "Pooling", ["conv1"], "pool1", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }")
    if train:
        return text + layer("loss", "SoftmaxWithLoss", ["fc%d" % classes, "label"], "loss")
    return text + layer("prob", "Softmax", ["fc%d" % classes], "prob")


def build(width: float, seed: int):
    rng = np.random.default_rng(seed)
    params = collections.OrderedDict()
    for name, ltype, shape in resnet50_shapes(width):
        fan_in = int(np.prod(shape[1:]))
        w = rng.laplace(scale=np.sqrt(1.0 / fan_in), size=shape).astype(np.float32)
        params[name] = LayerParams(ltype, [w, np.zeros(shape[0], np.float32)])
    return params


class Clock:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def calibrated(args) -> int:
    """``encode --calib`` timed end to end through the CLI, then the written file scored on a test split.

    The file is decoded and run beside the dense model on every test image (pycaffe or OpenCV, as the
    calibration ran); the exact drop, its paired interval, and whether it lies in the interval the
    encoder reported on its held-out calibration part, go to the JSON with the timings."""
    import subprocess
    import tempfile

    from caffe_dc.algorithms import stats
    from caffe_dc.codec.caffe_proto import load_net_text
    from caffe_dc.codec.caffemodel import load_params
    from caffe_dc.pycaffe import calibration
    from caffe_dc.stages import posthoc

    with tempfile.TemporaryDirectory() as tmp:
        dcz, js = os.path.join(tmp, "model.dcz"), os.path.join(tmp, "model.json")
        cmd = [sys.executable, "-m", "caffe_dc", "encode", args.prototxt, args.caffemodel, "--calib", args.calib,
               "--calib-images", str(args.images), "-o", dcz, "--json", js] + args.encode_args
        with Clock() as t:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        print(p.stdout)
        if p.returncode:
            return p.returncode
        child = os.times()
        doc = json.load(open(js))
        q, _, _ = frontend.decode_bytes(open(dcz, "rb").read())
        size = os.path.getsize(dcz)
    cal = doc["calibration"]
    result = {"command": cmd[2:], "seconds": {"wall": round(t.wall, 2), "cpu": round(child.children_user + child.children_system, 2)},
              "file_bytes": size, "rate": cal["rate"], "calibration": cal,
              "environment": dict(provenance.environment(), load_average_1min=round(os.getloadavg()[0], 2))}
    if args.test:
        from caffe_dc.cli.codec import _add_calibration_args, calibration_preprocess

        net_param = load_net_text(args.prototxt)
        given = argparse.ArgumentParser(add_help=False)
        _add_calibration_args(given)      # the test images preprocessed as encode's options said for calibration
        prep = calibration_preprocess(given.parse_known_args(args.encode_args)[0], net_param)
        raw, labels, _ = calibration.read(args.test)
        x = calibration.transform(raw, prep)
        params = load_params(args.caffemodel)
        with tempfile.TemporaryDirectory() as tmp:
            fwd = calibration.forward_for(net_param, (100,) + x.shape[1:], params, tmp)
            layers = posthoc.layers_of(net_param, params)
            correct = []
            for model in (params, q):
                for l in layers:
                    fwd.set(l.name, model[l.name].blobs)
                sc = np.concatenate([fwd.scores(np.concatenate([x[i:i + 100], np.repeat(x[-1:], max(0, i + 100 - len(x)), 0)]))[:min(100, len(x) - i)]
                                     for i in range(0, len(x), 100)])
                correct.append(posthoc.top1_correct(sc, labels))
        cmp = stats.paired(correct[0], correct[1], cal["held_out"]["comparison"]["margin"])
        lo, hi = cal["held_out"]["drop_interval_pp"]
        drop = -100 * cmp["diff"]
        result["test"] = {"data": os.path.abspath(args.test), "images": int(len(labels)),
                          "dense": float(correct[0].mean()), "compressed": float(correct[1].mean()),
                          "drop_pp": round(drop, 3), "drop_interval_pp": [round(-100 * cmp["diff_high"], 3),
                                                                          round(-100 * cmp["diff_low"], 3)],
                          "in_held_out_interval": bool(lo <= drop <= hi)}
        print("test: dense %.2f%%, compressed %.2f%%: drop %.2f pp (held-out interval [%.2f, %.2f]: %s)"
              % (100 * correct[0].mean(), 100 * correct[1].mean(), drop, lo, hi,
                 "inside" if lo <= drop <= hi else "OUTSIDE"))
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print("%.1fx, %.1f s wall, %.1f s cpu; wrote %s" % (cal["rate"], t.wall, result["seconds"]["cpu"], args.out))
    return 0


def make_resnet(args) -> int:
    """A real ResNet for the calibrated benchmark: ``resnet50_prototxt`` with BatchNorm and Scale, for
    MNIST-format images (one channel, 10 classes), its weights from Caffe's fillers, then trained
    briefly by pycaffe (Adam) on the IDX training images (``--iters``; the BatchNorm statistics are
    Caffe's running averages from the same steps). Writes DIR/deploy.prototxt, DIR/train.prototxt,
    DIR/solver.prototxt and DIR/resnet.caffemodel."""
    from caffe_dc.pycaffe import calibration
    from caffe_dc.pycaffe.solving import import_caffe

    caffe = import_caffe()
    caffe.set_random_seed(args.seed)
    raw, labels, _ = calibration.read(args.train_data)
    x = calibration.transform(raw, calibration.Preprocess(scale=SCALE))
    size, batch = x.shape[-1], 32
    os.makedirs(args.make_resnet, exist_ok=True)
    path = lambda f: os.path.join(args.make_resnet, f)
    for name, text in (("deploy.prototxt", resnet50_prototxt(args.width, 1, size, 10, True)),
                       ("train.prototxt", resnet50_prototxt(args.width, 1, size, 10, True, batch, train=True)),
                       ("solver.prototxt", 'net: "%s"\ntype: "Adam"\nbase_lr: 0.001\nmomentum: 0.9\nmomentum2: 0.999\nweight_decay: 0.0001\n'
                        'lr_policy: "fixed"\nmax_iter: %d\nsolver_mode: CPU\nrandom_seed: %d\n'
                        % (path("train.prototxt"), args.iters, args.seed))):
        atomic_write(path(name), text.encode())
    solver = caffe.get_solver(path("solver.prototxt"))
    order = np.random.RandomState(args.seed).permutation(x.shape[0])
    net = solver.net

    def feed(it):
        pick = order[(it * batch) % len(order):][:batch]
        pick = pick if len(pick) == batch else order[:batch]
        net.blobs["data"].data[...] = x[pick]
        net.blobs["label"].data[...] = labels[pick]

    with Clock() as t:
        for it in range(args.iters):
            feed(it)
            solver.step(1)
            if it % 50 == 0 or it == args.iters - 1:
                print("iteration %d: loss %.3f" % (it, float(net.blobs["loss"].data)))
        # Caffe's running BatchNorm statistics average over every step, from the first weights on, which a
        # brief training leaves far from the last: estimated afresh with the final weights, forward only
        for name, layer in zip(net._layer_names, net.layers):
            if layer.type == "BatchNorm":
                for b in net.params[name]:
                    b.data[...] = 0
        for it in range(args.iters, args.iters + BN_BATCHES):
            feed(it)
            net.forward()
    net.save(path("resnet.caffemodel"))
    n = sum(net.params[l][0].data.size for l, t, _ in resnet50_shapes(args.width, 1, 10))
    print("%d conv and fc weights, %d iterations in %.0f s cpu; wrote %s" % (n, args.iters, t.cpu, path("resnet.caffemodel")))
    return 0


def main(argv=None):
    """The benchmark's options and its one pass over the nets, kept together so the JSON's record of a run reads top to bottom."""
    if argv is None:
        argv = sys.argv[1:]
    if "--make-resnet" in argv:
        ap = argparse.ArgumentParser(description=make_resnet.__doc__.split("\n\n")[0])
        ap.add_argument("--make-resnet", required=True, metavar="DIR")
        ap.add_argument("--train-data", required=True, help="MNIST-format IDX training images (labelled)")
        ap.add_argument("--width", type=float, default=0.5)
        ap.add_argument("--iters", type=int, default=400)
        ap.add_argument("--seed", type=int, default=1)
        return make_resnet(ap.parse_args(argv))
    if "--calib" in argv:
        ap = argparse.ArgumentParser(description=calibrated.__doc__.split("\n\n")[0])
        ap.add_argument("prototxt")
        ap.add_argument("caffemodel")
        ap.add_argument("--calib", required=True)
        ap.add_argument("--images", type=int, default=1000)
        ap.add_argument("--test", help="a labelled test split (IDX images file, LMDB) to score the file on")
        ap.add_argument("--out", default="runs/bench/posthoc-calib.json")
        args, rest = ap.parse_known_args(argv)
        args.encode_args = rest
        return calibrated(args)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench/posthoc.json")
    ap.add_argument("--width", type=float, default=0.5, help="channel width of ResNet-50 (0.5: ~6.4M weights)")
    ap.add_argument("--density", type=float, default=1.0, help="kept share of every layer (1.0: no pruning)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sklearn", action="store_true", help="also time scikit-learn's KMeans on the largest layer")
    args = ap.parse_args(argv)

    params = build(args.width, args.seed)
    layers = frontend.compressible(params)
    n_weights = sum(params[n].blobs[0].size for n in layers)
    bits = {n: BITS for n in layers}
    dens = {n: args.density for n in layers} if args.density < 1.0 else None

    with Clock() as t_q:
        q = frontend.post_hoc(params, None, dens, bits)
    with Clock() as t_e:
        data, stats = frontend.encode_params(q, None, None)
    total = (t_q.wall + t_e.wall, t_q.cpu + t_e.cpu)
    with Clock() as t_d:
        back, _, _ = frontend.decode_bytes(data)
    exact = all(np.array_equal(back[n].blobs[0], q[n].blobs[0]) for n in layers)

    with Clock() as km:   # the k-means share, again on its own
        for n in layers:     # the kept weights: where the quantized layer is nonzero
            quantization.kmeans(params[n].blobs[0][q[n].blobs[0] != 0], (1 << BITS) - 1)

    sk = None
    if args.sklearn:
        big = max(layers, key=lambda n: params[n].blobs[0].size)
        v = params[big].blobs[0].ravel()
        sk = {"layer": big, "weights": int(v.size)}
        with Clock() as c:
            quantization.kmeans(v[v != 0], (1 << BITS) - 1)
        sk["lloyd_1d_seconds"] = {"wall": round(c.wall, 3), "cpu": round(c.cpu, 3)}
        with Clock() as c:
            _sklearn_kmeans(v[v != 0], (1 << BITS) - 1)
        sk["sklearn_seconds"] = {"wall": round(c.wall, 3), "cpu": round(c.cpu, 3)}

    tot = stats.totals()
    r = lambda c: {"wall": round(c.wall, 3), "cpu": round(c.cpu, 3)}
    result = {
        "synthetic": True,
        "note": "SYNTHETIC weights: ResNet-50 layer shapes at width %.2f, i.i.d. Laplace, post-hoc pruning to "
                "density %.2f and 8-bit k-means on every conv/fc layer, then the encoder. Sizes are indicative; "
                "the timings are the measurement (CPU time is the steadier figure on a shared machine)."
                % (args.width, args.density),
        "model": {"layers": len(layers), "weights": int(n_weights), "density": args.density, "weight_bits": BITS,
                  "index_bits": "auto (each layer the width of its smallest record)"},
        "seconds": {"quantize_post_hoc": r(t_q), "of_which_kmeans": r(km), "encode": r(t_e),
                    "post_hoc_encode_total": {"wall": round(total[0], 3), "cpu": round(total[1], 3)},
                    "decode": r(t_d)},
        "goal_seconds": 2.0,
        "bit_exact_round_trip": bool(exact),
        "file_bytes": len(data),
        "rate_pqh": tot["rate_pqh"],
        "sklearn_comparison": sk,
        # commit, CPU, BLAS and library versions (base.provenance), and how loaded the machine was
        "environment": dict(provenance.environment(), load_average_1min=round(os.getloadavg()[0], 2)),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print("SYNTHETIC ResNet-50 x%.2f: %d layers, %.2fM weights, density %.2f, %d bits"
          % (args.width, len(layers), n_weights / 1e6, args.density, BITS))
    for k, v in result["seconds"].items():
        print("  %-22s wall %6.2f s   cpu %6.2f s" % (k, v["wall"], v["cpu"]))
    if sk:
        print("  largest layer %s (%d weights): lloyd_1d %.2f s cpu, sklearn %.2f s cpu"
              % (sk["layer"], sk["weights"], sk["lloyd_1d_seconds"]["cpu"], sk["sklearn_seconds"]["cpu"]))
    print("file %.2f MB (%.1fx); bit-exact: %s; load average %.1f; wrote %s"
          % (len(data) / 1e6, 1 / tot["rate_pqh"], exact, os.getloadavg()[0], args.out))
    return 0 if exact else 1


def _sklearn_kmeans(values, k):
    """The quantizer's k-means as it ran on scikit-learn (distinct values weighted by their counts)."""
    import warnings

    from sklearn.cluster import KMeans

    v = np.asarray(values, np.float32)
    d, counts = np.unique(v, return_counts=True)
    d64 = d.astype(np.float64)
    start = quantization._top_up(quantization.init_centroids(v, k), d64, k)
    tol = quantization.KMEANS_TOL * float(np.var(v, dtype=np.float64)) / float(np.var(d64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        algorithm = "full" if tuple(int(x) for x in __import__("sklearn").__version__.split(".")[:2]) < (1, 1) else "lloyd"
        KMeans(k, init=start.reshape(-1, 1), n_init=1, algorithm=algorithm, tol=tol,
               max_iter=quantization.KMEANS_MAX_ITER).fit(d64.reshape(-1, 1), sample_weight=counts.astype(np.float64))


if __name__ == "__main__":
    sys.exit(main())
