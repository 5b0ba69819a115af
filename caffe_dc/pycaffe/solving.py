"""Running Caffe solvers through pycaffe: quiet start, progress, testing, snapshots.

Training, pruning's retraining and quantization's fine-tuning all come
through here, so that every stage shows the same progress bar and measures
accuracy the same way. We run the test net ourselves (Caffe's own periodic
testing is switched off in the solvers we write) so that the numbers land in
Python, not only in GLOG.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from caffe_dc.pycaffe.caffemodel import save_solver_proto
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import require_file
from caffe_dc.base.params import Params

_caffe = None


def import_caffe(verbose: bool = False):
    """Import pycaffe once, with GLOG's start-up chatter hidden unless verbose."""
    global _caffe
    if _caffe is None:
        os.environ["GLOG_minloglevel"] = "0" if verbose else os.environ.get("CAFFE_DC_GLOG", "2")
        try:
            import caffe
        except ImportError as e:
            raise InputError("pycaffe is not importable here (%s); run caffe-dc through ./dc" % e)
        caffe.set_mode_cpu()
        _caffe = caffe
    return _caffe


def make_solver(solver_param, path: str, verbose: bool = False):
    """Write the solver prototxt to ``path`` and build it. Caffe's own testing is disabled."""
    caffe = import_caffe(verbose)
    sp = type(solver_param)()
    sp.CopyFrom(solver_param)
    if not sp.test_iter:
        sp.test_iter.append(1)
    sp.test_interval = max(sp.max_iter, 1) * 10 + 1
    sp.test_initialization = False
    sp.display = 0
    save_solver_proto(sp, path)
    solver = caffe.get_solver(path)
    # Caffe shares train weights with the test net only inside its own Test();
    # we test from Python, so share them once here (the sharing is by pointer and lasts).
    for tn in solver.test_nets:
        tn.share_with(solver.net)
    return solver


def test_net_metrics(net, iters: int) -> Dict[str, float]:
    """Mean of every scalar output blob (loss, accuracy, ...) over ``iters`` batches."""
    sums: Dict[str, float] = {}
    outputs = [b for b in net.outputs if net.blobs[b].data.size == 1]
    for _ in range(iters):
        out = net.forward()
        for b in outputs:
            sums[b] = sums.get(b, 0.0) + float(np.asarray(out[b]).ravel()[0])
    return {b: v / iters for b, v in sums.items()}


def accuracy_of(metrics: Dict[str, float]) -> Optional[float]:
    for key in ("accuracy", "accuracy_top1", "acc"):
        if key in metrics:
            return metrics[key]
    return None


def save_net(net, path: str) -> None:
    """net.save() through fileio's temp file (fsync, umask permissions, rename): a kill never leaves
    half a caffemodel."""
    from caffe_dc.base.fileio import atomic_path

    with atomic_path(path) as tmp:
        net.save(tmp)


def progress_bar(total: int, done: int = 0, desc: str = "train", progress: bool = True):
    """One training phase's bar (``total`` iterations, ``done`` of them before this process started)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="it", disable=not progress, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0, leave=False)


def run(solver, iters: int, test_iter: int, test_every: int = 0, desc: str = "train",
        progress: bool = True, chunk: int = 50, bar=None) -> List[Dict[str, float]]:
    """Step ``solver`` for ``iters`` iterations with a progress bar; test every ``test_every``.

    ``bar`` (``progress_bar``): a phase run in pieces (between snapshots or evaluations) passes its
    own, so the user sees one bar per phase, whose rate and time left run across the pieces;
    without one, this call has its own. Returns the list of test results (each with 'iter'), the
    last one at the end.
    """
    history: List[Dict[str, float]] = []
    start = solver.iter
    end = start + iters
    own = bar is None
    if own:
        bar = progress_bar(iters, 0, desc, progress)
    t0 = time.time()
    loss_blob = "loss" if "loss" in solver.net.blobs else None
    try:
        while solver.iter < end:
            n = min(chunk, end - solver.iter)
            if test_every:
                n = min(n, test_every - (solver.iter - start) % test_every)
            solver.step(n)
            bar.update(n)
            if loss_blob:
                bar.set_postfix(loss="%.4f" % float(solver.net.blobs[loss_blob].data), refresh=False)
            done = solver.iter - start
            if test_every and done % test_every == 0 and solver.iter < end:
                m = test_net_metrics(solver.test_nets[0], test_iter)
                m["iter"] = solver.iter
                history.append(m)
                if progress:
                    bar.write("  %s iter %d: %s" % (desc, solver.iter, _fmt(m)), file=sys.stderr)
    finally:
        if own:
            bar.close()
    elapsed = time.time() - t0
    m = test_net_metrics(solver.test_nets[0], test_iter)
    m["iter"] = solver.iter
    m["seconds"] = elapsed
    m["iters_per_s"] = iters / elapsed if elapsed > 0 else float("nan")
    history.append(m)
    return history


def _fmt(m: Dict[str, float]) -> str:
    return ", ".join("%s %.4f" % (k, v) for k, v in m.items() if k not in ("iter", "seconds", "iters_per_s"))


def evaluate(net_prototxt: str, caffemodel: str, iters: int, verbose: bool = False) -> Dict[str, float]:
    """Test-phase metrics of a caffemodel on the net's own TEST data layer."""
    caffe = import_caffe(verbose)
    require_file(caffemodel, "caffemodel")
    net = caffe.Net(net_prototxt, caffe.TEST, weights=caffemodel)
    return test_net_metrics(net, iters)


def caffe_cli_test(net_prototxt: str, caffemodel: str, iterations: int) -> Dict[str, float]:
    """Run Caffe's own ``caffe test`` binary and parse its final scores.

    This is the check a user would make by hand, independent of pycaffe.
    """
    import re
    import subprocess

    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    r = subprocess.run(["caffe", "test", "-model", net_prototxt, "-weights", caffemodel,
                        "-iterations", str(iterations)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, env=env)
    if r.returncode != 0:
        tail = [l for l in r.stdout.splitlines() if "Check failed" in l or "Error" in l][-1:]
        raise InputError("`caffe test` failed (exit %d): %s" % (r.returncode, tail[0] if tail else r.stdout[-300:]))
    scores = {}
    for m in re.finditer(r"\] (\w+) = ([-+0-9.eE]+|nan|inf)\s*$", r.stdout, re.M):
        scores[m.group(1)] = float(m.group(2))  # the final summary lines come last and win
    if not scores:
        raise InputError("`caffe test` printed no scores")
    return scores


def param_shapes(net_param, phase: str = "TEST") -> Dict[str, list]:
    """Blob shapes of every parameterised layer, as Caffe infers them for ``net_param``."""
    from caffe_dc.pycaffe.validate import net_shapes

    return net_shapes(net_param, phase)  # checked, then built in a child process that may abort


def test_batch(net_param) -> int:
    """Batch size of the TEST-phase data layer (what one test iteration consumes)."""
    from caffe_dc.pycaffe.nets import data_layers

    layers = data_layers(net_param)
    layer = layers.get("test") or layers.get("train")
    if layer is None:
        raise InputError("net %s has no Data layer" % net_param.name)
    return int(layer.data_param.batch_size)


def test_iters_for(net_param, n_test: int) -> int:
    """Test batches that cover an evaluation split of ``n_test`` images exactly once.

    The TEST batch must divide ``n_test`` (``nets.exact_batch`` makes it so):
    otherwise Caffe's reader wraps around and counts some images twice.
    """
    b = test_batch(net_param)
    if int(n_test) % b:
        raise InputError("the TEST batch %d does not divide the %d evaluation images: a pass would count "
                         "%d of them twice" % (b, n_test, b - int(n_test) % b))
    return int(n_test) // b

def check_matches(net_param, params: Params, where: str) -> None:
    """Refuse a caffemodel that does not fit the net, before Caffe aborts on it."""
    from caffe_dc.codec.net_shapes import check_params

    check_params(param_shapes(net_param), params, where)


def accuracy_layers(net_param) -> List[Tuple[str, str, str, int]]:
    """(name, scores blob, label blob, top_k) of every Accuracy layer that runs in the TEST phase."""
    from caffe_dc.pycaffe.nets import accuracy_layers as found

    return found(net_param)


def score_exact(net_prototxt: str, caffemodel: str, n_images: int, verbose: bool = False) -> Dict[str, object]:
    """Score a caffemodel on every image of the TEST split exactly once, image by image.

    The TEST batch must divide ``n_images`` (``nets.exact_batch``). A fresh
    net reads from the first record, so every model is scored on the same
    images in the same order. Returns ``{"n", "correct", "accuracy", "per_image"}``
    for top-1 and, when the net has a top-5 Accuracy layer, the same with a
    ``_top5`` suffix; ``per_image`` is a bool array in LMDB order, for paired
    comparisons.
    """
    from caffe_dc.pycaffe.caffemodel import load_net_proto

    caffe = import_caffe(verbose)
    require_file(caffemodel, "caffemodel")
    net_param = load_net_proto(net_prototxt)
    acc = accuracy_layers(net_param)
    if not acc:
        raise InputError("%s has no TEST-phase Accuracy layer to score with" % net_prototxt)
    iters = test_iters_for(net_param, n_images)
    net = caffe.Net(net_prototxt, caffe.TEST, weights=caffemodel)
    ks = sorted({k for _, _, _, k in acc} | {1})
    scores_blob, label_blob = acc[0][1], acc[0][2]
    hits = {k: [] for k in ks}
    for _ in range(iters):
        net.forward()
        s = net.blobs[scores_blob].data.reshape(net.blobs[scores_blob].data.shape[0], -1)
        lab = net.blobs[label_blob].data.reshape(-1).astype(np.int64)
        # rank of the true class: the count of classes scored strictly higher (Caffe's own rule)
        true = s[np.arange(s.shape[0]), lab]
        higher = (s > true[:, None]).sum(axis=1)
        for k in ks:
            hits[k].append(higher < k)
    out: Dict[str, object] = {}
    for k in ks:
        per = np.concatenate(hits[k])
        suffix = "" if k == 1 else "_top%d" % k
        out["n" + suffix] = int(per.size)
        out["correct" + suffix] = int(per.sum())
        out["accuracy" + suffix] = float(per.sum()) / per.size
        out["per_image" + suffix] = per
    return out
