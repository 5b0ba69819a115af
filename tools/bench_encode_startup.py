#!/usr/bin/env python3
"""Benchmark `caffe-dc encode` of a foreign caffemodel end to end, as a user runs it (SYNTHETIC weights).

The model is ResNet-50 at half width (``bench_posthoc.resnet50_shapes``: 53
convolutions and the classifier, ~6.9M weights) with its deploy prototxt
(real topology: strided 1x1 projections, 3x3 convolutions, residual Eltwise
sums, global average pooling), saved as a caffemodel without codebooks, so
``encode`` prunes nothing (density 1) and quantizes every layer post hoc.
Each command is a fresh process, timed by wall clock from start to exit:
``encode DEPLOY MODEL`` (the shapes checked against the prototxt) and
``encode MODEL`` (no prototxt). Also timed, for what the command no longer
spends: ``import caffe`` alone, and Caffe building the net in a child to
infer its shapes (``validate.net_shapes``, the check before this change).

    ./dc dev python3 /src/tools/bench_encode_startup.py [--out results/bench/encode_startup.json] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from bench_posthoc import build, resnet50_prototxt  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.codec.caffemodel import save_params  # noqa: E402


def deploy_text(width: float, size: int = 64) -> str:
    """The deploy prototxt of ``resnet50_shapes(width)``: the layers, wired as ResNet-50 wires them."""
    return resnet50_prototxt(width, size=size)


def _timed(cmd, env=None):
    """(wall, cpu) seconds of a command in a fresh process; cpu is the child's user + system time,
    the steadier figure when other jobs share the cores."""
    t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
    if r.returncode:
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), r.stderr[-2000:]))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _stats(times):
    wall, cpu = [w for w, _ in times], [c for _, c in times]
    return {"wall_min": round(min(wall), 3), "wall_median": round(float(np.median(wall)), 3),
            "cpu_min": round(min(cpu), 3), "cpu_median": round(float(np.median(cpu)), 3),
            "wall_runs": [round(t, 3) for t in wall]}


def _environment():
    """base.provenance's record (commit, CPU, BLAS, versions) and how loaded the machine was."""
    from caffe_dc.base import provenance

    return dict(provenance.environment(), load_average_1min=round(os.getloadavg()[0], 2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench/encode_startup.json")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        deploy, model = os.path.join(tmp, "deploy.prototxt"), os.path.join(tmp, "model.caffemodel")
        with open(deploy, "w") as f:
            f.write(deploy_text(args.width))
        params = build(args.width, 0)
        save_params(params, model)
        n = sum(lp.blobs[0].size for lp in params.values())
        enc = [sys.executable, "-m", "caffe_dc", "encode"]
        before = round(os.getloadavg()[0], 2)
        with_proto = [_timed(enc + [deploy, model, "-o", os.path.join(tmp, "a.dcz")], env) for _ in range(args.repeat)]
        no_proto = [_timed(enc + [model, "-o", os.path.join(tmp, "b.dcz")], env) for _ in range(args.repeat)]
        same = open(os.path.join(tmp, "a.dcz"), "rb").read() == open(os.path.join(tmp, "b.dcz"), "rb").read()
        caffe = None
        try:
            import importlib.util

            if importlib.util.find_spec("caffe") is not None:
                imp = [_timed([sys.executable, "-c", "import caffe"], env) for _ in range(args.repeat)]
                build_code = ("import sys; from caffe_dc.codec.caffe_proto import load_net_text; "
                              "from caffe_dc.pycaffe.validate import net_shapes; "
                              "net_shapes(load_net_text(sys.argv[1]), 'TEST', path=sys.argv[1])")
                child = [_timed([sys.executable, "-c", build_code, deploy], env) for _ in range(args.repeat)]
                caffe = {"import_caffe": _stats(imp), "shapes_by_building_the_net_in_caffe": _stats(child)}
        except ImportError:
            pass
        dcz_bytes = os.path.getsize(os.path.join(tmp, "a.dcz"))
    result = {
        "synthetic": True,
        "what": "wall seconds of `caffe-dc encode` as a fresh process, post hoc (no codebooks: 8-bit conv / "
                "5-bit fc k-means, density 1), on ResNet-50 at width %.2f with SYNTHETIC weights" % args.width,
        "model": {"weights": int(n), "layers": len(params), "caffemodel_bytes": 4 * int(sum(
            b.size for lp in params.values() for b in lp.blobs)), "dcz_bytes": dcz_bytes},
        "seconds": {"encode_with_deploy_prototxt": _stats(with_proto), "encode_without_prototxt": _stats(no_proto)},
        "same_bytes_with_and_without_prototxt": same,
        "for_comparison_not_spent_by_encode": caffe,
        "goal_seconds": 2.0,
        "load_average_1min_before": before,
        "environment": _environment(),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result["seconds"]), json.dumps(caffe), "same bytes:", same, "| load", os.getloadavg()[0],
          "| wrote", args.out)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
