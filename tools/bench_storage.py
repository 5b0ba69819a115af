#!/usr/bin/env python3
"""Storage at the paper's settings for AlexNet and VGG-16 (SYNTHETIC weights): sizes, timings, memory.

Runs ``caffe-dc storage <net>`` for each net in its own process (so each
peak RSS is that net's alone), then collects from each run's JSON the
stage timings (prune, quantize, encode, decode), the peak resident memory
and the total size beside the paper's (AlexNet 240 MB -> 6.9 MB, 35x;
VGG-16 552 MB -> 11.3 MB, 49x), and prints one table.

    ./dc dev python3 /src/tools/bench_storage.py [--out runs/bench/storage.json] [--nets alexnet,vgg16]
                                                 [--fit-sample N] [--seed N] [--collect]

Each net's full report stays in ``runs/storage-<net>/`` (storage.md,
storage.json, <net>.dcz). The weights are synthetic (see
``caffe_dc/pipeline/storage.py``): the sizes show what our encoder does at the
paper's settings on such weights, not a reproduction of the trained nets.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from caffe_dc.base import provenance  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.base.tables import text_table  # noqa: E402


def run_net(net, out_dir, seed, fit_sample):
    cmd = [sys.executable, "-m", "caffe_dc", "storage", net, "--out", out_dir, "--seed", str(seed)]
    if fit_sample:
        cmd += ["--fit-sample", str(fit_sample)]
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print("$ caffe-dc " + " ".join(cmd[3:]), flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr)
        raise SystemExit("storage %s failed (exit %d)" % (net, proc.returncode))
    for line in proc.stdout.splitlines():   # the progress lines: stage totals only
        if " total " in line and ("prune" in line or "seconds" in line) or "] encode" in line or "] decode" in line:
            print("  " + line)
    with open(os.path.join(out_dir, "storage.json")) as f:
        return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("runs", "bench", "storage.json"))
    ap.add_argument("--nets", default="alexnet,vgg16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-sample", type=int, help="passed to `storage` (default: full k-means fit)")
    ap.add_argument("--collect", action="store_true",
                    help="do not run anything: collect runs/storage-<net>/storage.json from earlier runs")
    args = ap.parse_args(argv)

    results = {}
    for net in [n.strip() for n in args.nets.split(",") if n.strip()]:
        out_dir = os.path.join("runs", "storage-%s" % net)
        if args.collect:
            path = os.path.join(out_dir, "storage.json")
            if not os.path.isfile(path):
                raise SystemExit("no %s: run without --collect first" % path)
            with open(path) as f:
                doc = json.load(f)
        else:
            doc = run_net(net, out_dir, args.seed, args.fit_sample)
        s, t, p = doc["seconds"], doc["totals"], doc["paper"]
        results[net] = {"weights": doc["weights"], "seconds": s, "peak_rss_mb": doc["peak_rss_mb"],
                        "rss_mb_by_stage": doc["rss_mb_by_stage"], "totals": t, "paper": p,
                        "kmeans_fit": doc["kmeans_fit"], "report": doc["files"]["markdown"],
                        "command": doc.get("command")}
    rows = [[net, r["weights"], "%.1f" % r["seconds"]["prune"], "%.1f" % r["seconds"]["quantize"],
             "%.2f" % r["seconds"]["encode"], "%.2f" % r["seconds"]["decode"], "%.0f" % r["peak_rss_mb"],
             "%.1f -> %.2f MB, %.1fx" % (r["totals"]["dense_mb"], r["totals"]["compressed_mb"], r["totals"]["ratio"]),
             "%g -> %g MB, %gx" % (r["paper"]["dense_mb"], r["paper"]["compressed_mb"], r["paper"]["ratio"])]
            for net, r in results.items()]
    print(text_table(["net", "weights", "prune s", "quantize s", "encode s", "decode s", "peak RSS MB",
                      "ours", "paper"], rows))
    atomic_write(args.out, json.dumps({"nets": results, "cpus": os.cpu_count(), "environment": provenance.environment()},
                                      indent=2).encode())
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
