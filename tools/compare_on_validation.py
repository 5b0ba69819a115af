#!/usr/bin/env python3
"""Two recipes compared on the validation split, image by image and over seeds: the rule for every choice.

Each ``--a`` run folder is paired with the ``--b`` folder at the same position (same seed, other
recipe). The named stage's model of each is scored on every image of its run's validation split,
once (the TEST phase of the run's train_val.prototxt reads it); the per-seed change B - A is
paired image by image, and the mean over seeds gets the interval of the seed summaries
(``stats.over_seeds``: the seeds' spread plus the test sampling they share). A recipe is
chosen only when that interval lies above 0: a search over a noisy split must not pick
its noise. Never reads the test split. Writes ``<out>.json`` with every per-image result
(packed bits), so the verdict can be recomputed. Runs in the image (needs pycaffe):

    ./dc dev python3 /src/tools/compare_on_validation.py --model reference \\
        --a runs/seeds-lenet-5/seed-1 runs/seeds-lenet-5/seed-2 \\
        --b runs/explore-lenet-5/ref-lr0.05/seed-1 runs/explore-lenet-5/ref-lr0.05/seed-2 \\
        --out runs/explore-lenet-5/ref-lr0.05-vs-preset
"""
import base64
import json
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from caffe_dc.algorithms import stats  # noqa: E402
from caffe_dc.base.fileio import atomic_write  # noqa: E402
from caffe_dc.cli.args import OneLineParser  # noqa: E402

MODELS = ("reference", "prune", "quantize", "decode", "control")


def model_of(run: str, stage: str) -> tuple:
    """(train_val prototxt, caffemodel, validation images, seed) of ``stage`` in the run folder; checked."""
    path = os.path.join(run, "pipeline.json")
    if not os.path.isfile(path):
        raise ValueError("%s has no pipeline.json (not a run folder)" % run)
    with open(path) as f:
        doc = json.load(f)
    rec = doc.get(stage) or {}
    if not rec.get("done") or not rec.get("caffemodel"):
        raise ValueError("%s: stage %s has no finished model" % (run, stage))
    n_val = (doc.get("data") or {}).get("n_val")
    if not n_val:
        raise ValueError("%s: its data has no validation split" % run)
    proto = os.path.join(run, "train_val.prototxt")
    if not os.path.isfile(proto):
        raise ValueError("%s has no train_val.prototxt" % run)
    model = rec["caffemodel"]
    if not os.path.isfile(model):
        raise ValueError("%s: %s is missing" % (run, model))
    seed = ((doc.get("reference") or {}).get("inputs") or {}).get("seed")
    return proto, model, int(n_val), seed


def compare(per_a, per_b, margin: float) -> dict:
    """Per-seed paired changes (B - A) and their mean over seeds, from per-image correctness (same images)."""
    seeds = [stats.paired(a, b, margin=margin) for a, b in zip(per_a, per_b)]
    out = {"per_seed": seeds, "accuracy_a": [float(a.mean()) for a in per_a], "accuracy_b": [float(b.mean()) for b in per_b]}
    if len(per_a) >= 2:
        o = stats.over_seeds(len(per_a[0]), **stats.per_image_sums(per_a, per_b))
        mean = {"diff": float(o["diff"]), "diff_low": float(o["diff_low"]), "diff_high": float(o["diff_high"]),
                "margin": margin}
        out["over_seeds"] = dict(mean, se=float(o["se"]), df=int(o["df"]), verdict=stats.verdict(mean),
                                 b_better=bool(mean["diff_low"] > 0))
    return out


def main() -> int:
    ap = OneLineParser(prog="compare_on_validation", description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", required=True, help="run folders of recipe A (the current one), a seed each")
    ap.add_argument("--b", nargs="+", required=True, help="run folders of recipe B, the same seeds in the same order")
    ap.add_argument("--model", choices=MODELS, default="reference", help="which stage's model (default reference)")
    ap.add_argument("--margin", type=float, default=0.2, help="the margin the verdict is stated at, pp (default 0.2)")
    ap.add_argument("--out", required=True, help="write OUT.json")
    a = ap.parse_args()
    if len(a.a) != len(a.b):
        return fail("--a has %d runs and --b %d: pair them by seed" % (len(a.a), len(a.b)))
    try:
        pairs = [(model_of(x, a.model), model_of(y, a.model)) for x, y in zip(a.a, a.b)]
    except (ValueError, OSError) as e:
        return fail(str(e))
    for (_, _, na, sa), (_, _, nb, sb) in pairs:
        if na != nb:
            return fail("a pair has validation splits of %d and %d images" % (na, nb))
        if sa != sb:
            print("note: a pair has seeds %s and %s" % (sa, sb))
    if os.path.abspath(a.out + ".json") in {os.path.abspath(os.path.join(r, "pipeline.json")) for r in a.a + a.b}:
        return fail("--out would land on an input")
    from caffe_dc.pycaffe import solving
    per_a, per_b = [], []
    for (pa, ma, n, seed), (pb, mb, _, _) in pairs:
        per_a.append(solving.score_exact(pa, ma, n)["per_image"])
        per_b.append(solving.score_exact(pb, mb, n)["per_image"])
        print("seed %s: A %.2f%%  B %.2f%%  (%d images)" % (seed, 100 * per_a[-1].mean(), 100 * per_b[-1].mean(), n),
              flush=True)
    doc = compare(per_a, per_b, a.margin / 100.0)
    doc.update(model=a.model, a=a.a, b=a.b, n=len(per_a[0]), command=" ".join(
        ["python3", "tools/compare_on_validation.py"] + [shlex.quote(x) for x in sys.argv[1:]]),
        per_image_a=[base64.b64encode(stats.pack_correct(p).tobytes()).decode() for p in per_a],
        per_image_b=[base64.b64encode(stats.pack_correct(p).tobytes()).decode() for p in per_b])
    o = doc.get("over_seeds")
    if o:
        print("B - A over %d seeds: %+.2f pp [%+.2f, %+.2f]: %s" % (len(per_a), 100 * o["diff"], 100 * o["diff_low"],
                                                                  100 * o["diff_high"],
                                                                  "B is better" if o["b_better"] else "no choice"))
    atomic_write(a.out + ".json", json.dumps(doc, indent=1).encode())
    print("wrote %s.json" % a.out)
    return 0


def fail(message: str) -> int:
    print("compare_on_validation: error: %s" % message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
