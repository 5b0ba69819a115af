"""Per candidate rate: out-of-fold pool flips, held-out flips, and the exact test flips of the file."""
import argparse, json, sys, tempfile
import numpy as np
sys.path.insert(0, "/src")
from caffe_dc.cli.codec import _add_calibration_args, calibration_preprocess
from caffe_dc.codec.caffe_proto import load_net_text
from caffe_dc.codec.caffemodel import load_params
from caffe_dc.pycaffe import calibration
from caffe_dc.stages import posthoc
from caffe_dc.algorithms import stats

ap = argparse.ArgumentParser()
ap.add_argument("proto"); ap.add_argument("model"); ap.add_argument("--seed", type=int); ap.add_argument("--out")
ap.add_argument("--rates", default="")
a = ap.parse_args()
net_param = load_net_text(a.proto)
g = argparse.ArgumentParser(add_help=False); _add_calibration_args(g)
prep = calibration_preprocess(g.parse_known_args([])[0], net_param)
calib = calibration.load("/data", net_param, calibration.net_input_shape(net_param), prep, 1000, a.seed)
params = load_params(a.model)
raw, tl, _ = calibration.read("/data/t10k-images-idx3-ubyte.gz")
xt = calibration.transform(raw, prep)
cap = {}
orig = posthoc.choose_rate
def wrap(s, menu, *args, **kw):
    cap["s"], cap["menu"] = s, menu
    r = orig(s, menu, *args, **kw)
    cap["tried"] = list(r[1])
    for rate in [float(v) for v in a.rates.split(",") if v]:
        cap["tried"].append(orig(s, menu, None, rate)[0])
    return r
posthoc.choose_rate = wrap
opts = posthoc.Options(max_drop=0.5, seed=a.seed)
with tempfile.TemporaryDirectory() as work:
    res = posthoc.run_calibrated(net_param, params, calib, opts, work, progress=lambda *x: None)
    s = cap["s"]
    layers = posthoc.layers_of(net_param, params)
    fwd = calibration.forward_for(net_param, (100,) + xt.shape[1:], params, work)
    def test_correct(model):
        for l in layers:
            fwd.set(l.name, model[l.name].blobs)
        sc = np.concatenate([fwd.scores(xt[i:i + 100]) for i in range(0, len(xt), 100)])
        return posthoc.top1_correct(sc, tl)
    dense_t = test_correct(params)
    rows = []
    for c in sorted(cap["tried"], key=lambda c: c.target):
        final = s.compress(c.densities, c.bits)
        held = s.score(final, s.held)
        t = test_correct(final)
        pb, pc, _ = stats.counts_of(s.dense_correct[s.pool], c.correct)
        hb, hc, _ = stats.counts_of(s.dense_correct[s.held], held)
        tb, tc, _ = stats.counts_of(dense_t, t)
        rows.append(dict(target=c.target, pool=[int(pb), int(pc), len(s.pool)], held=[int(hb), int(hc), len(s.held)],
                         test=[int(tb), int(tc), len(tl)], test_drop=100 * (tb - tc) / len(tl), bound=posthoc.drop_bound(c.cmp)))
        print("%.1f pool %d/%d held %d/%d test %d/%d drop %.2f bound %.2f" % (c.target, pb, pc, hb, hc, tb, tc, rows[-1]["test_drop"], rows[-1]["bound"]), flush=True)
json.dump(dict(seed=a.seed, chosen=res.doc["rate"], rows=rows), open(a.out, "w"), indent=1)
