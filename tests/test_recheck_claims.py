"""tools/recheck_claims.py: every committed comparison recomputed from committed per-image files and records
(Caffe-free; on the committed results/ and on tampered copies)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from caffe_dc.algorithms import stats
from caffe_dc.report import recheck, seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "recheck_claims.py")
RESULTS = os.path.join(ROOT, "results")


def _run(*args):
    return subprocess.run([sys.executable, TOOL] + [str(a) for a in args], capture_output=True, text=True)


def _runs_under(root):
    out = []
    for d, _, files in os.walk(root):
        if "metrics.json" in files and "paired" in json.load(open(os.path.join(d, "metrics.json"))):
            out.append(d)
    return out


def test_the_committed_results_recheck():
    """Nothing committed disagrees with what it is computed from; what cannot be rechecked is named."""
    p = _run(RESULTS)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    assert " 0 mismatched" in p.stdout
    runs = _runs_under(RESULTS)
    assert runs
    for d in runs:
        m = json.load(open(os.path.join(d, "metrics.json")))
        for key in m["paired"]:
            lines = [l for l in p.stdout.splitlines() if " %s %s: " % (d, key) in l]
            assert any(l.startswith("ok") and "counts" in l for l in lines) or \
                any(l.startswith("flag") and "no per-image files" in l for l in lines), (d, key, lines)
        if (m.get("schedule") or {}).get("budget", {}).get("target_rate"):
            assert any(l.startswith(("ok", "flag")) and l.split(None, 1)[1].startswith("%s rate: " % d)
                       for l in p.stdout.splitlines()), d
    for d in (os.path.join(RESULTS, "seeds-lenet-5"), os.path.join(RESULTS, "seeds-lenet-300-100")):
        assert "ok       %s: mean against the control" % os.path.join(d, "seeds.json") in p.stdout


def _new_style_run(folder, b_only, c_only, n=2000, margin=0.004):
    """A run folder as the current exact test stage and report leave it: metrics.json and test/*.npy."""
    rng = np.random.default_rng(b_only)
    ref = rng.random(n) < 0.9
    dec = ref.copy()
    idx = rng.permutation(np.flatnonzero(ref))[:b_only]
    dec[idx] = False
    idx = rng.permutation(np.flatnonzero(~ref))[:c_only]
    dec[idx] = True
    ctl = ref.copy()
    ctl[rng.permutation(n)[:30]] ^= True
    (folder / "test").mkdir(parents=True)
    for name, x in (("reference", ref), ("control", ctl), ("decode", dec)):
        np.save(str(folder / "test" / ("%s_correct.npy" % name)), stats.pack_correct(x))
    m = {"net": "toy", "seed": int(folder.name.split("-")[-1]) if "seed-" in folder.name else 1, "command": "c",
         "compression": 40.0, "file_bytes": 1000, "model_sha256": "%064x" % b_only,
         "final_test": {"n": n, "correct": int(dec.sum())}, "reference_test": {"n": n, "correct": int(ref.sum())},
         "paired": {"reference->compressed": stats.paired(ref, dec, margin=margin),
                    "control->compressed": stats.paired(ctl, dec, margin=margin)},
         "stages": {"reference": {"accuracy": 0.9}}, "environment": {}}
    (folder / "metrics.json").write_text(json.dumps(m))
    return m


def test_a_current_run_rechecks_and_a_tampered_one_does_not(tmp_path):
    run = tmp_path / "net"
    _new_style_run(run, 40, 25)
    p = _run(tmp_path, "--strict")
    assert p.returncode == 0 and " 0 flagged, 0 mismatched" in p.stdout, p.stdout
    assert "recomputed from the counts" in p.stdout
    # a verdict that the interval does not give
    m = json.loads((run / "metrics.json").read_text())
    m["paired"]["control->compressed"]["verdict"] = stats.NO_LOSS if \
        m["paired"]["control->compressed"]["verdict"] != stats.NO_LOSS else stats.LOSS
    (run / "metrics.json").write_text(json.dumps(m))
    p = _run(tmp_path)
    assert p.returncode == 1 and "MISMATCH %s control->compressed: recomputed from the counts: .verdict" % run \
        in p.stdout, p.stdout
    # an interval edited by hand
    _new_style_run(tmp_path / "other", 30, 10)
    m = json.loads((tmp_path / "other" / "metrics.json").read_text())
    m["paired"]["reference->compressed"]["diff_low"] += 1e-4
    (tmp_path / "other" / "metrics.json").write_text(json.dumps(m))
    assert "reference->compressed: recomputed from the counts: .diff_low" in _run(tmp_path / "other").stdout


def test_a_file_off_its_target_rate_is_caught(tmp_path):
    """Issue 27: a run made for a target rate commits a file within 3% of it; the size is model.dcz's."""
    run = tmp_path / "net"
    m = _new_style_run(run, 40, 25)
    m.update(dense_bytes=40000, file_bytes=1000, schedule={"budget": {"target_rate": 39.0}})   # 40x: +2.6%
    (run / "metrics.json").write_text(json.dumps(m))
    (run / "model.dcz").write_bytes(b"x" * 1000)
    p = _run(tmp_path, "--strict")
    assert p.returncode == 0 and "ok       %s rate: 40.0x, +2.6%% from the budget's 39x (model.dcz)" % run in p.stdout, \
        p.stdout
    (run / "model.dcz").write_bytes(b"x" * 1040)                      # the file is not the one recorded
    p = _run(tmp_path)
    assert p.returncode == 1 and "MISMATCH %s rate: model.dcz holds 1040 bytes, metrics.json records 1000" % run \
        in p.stdout, p.stdout
    m.update(file_bytes=1040)                                         # 38.5x for a 40x budget: -3.8%
    m["schedule"]["budget"]["target_rate"] = 40
    (run / "metrics.json").write_text(json.dumps(m))
    p = _run(tmp_path)
    assert p.returncode == 1 and "MISMATCH %s rate: 38.5x, -3.8%% from the budget's 40x" % run in p.stdout, p.stdout
    for rec in m["paired"].values():                                  # a record from before margins: said, not failed
        del rec["margin"]
    (run / "metrics.json").write_text(json.dumps(m))
    p = _run(tmp_path)
    assert p.returncode == 0 and "flag     %s rate: 38.5x, -3.8%%" % run in p.stdout, p.stdout


def test_one_flipped_image_is_caught(tmp_path):
    shutil.copytree(os.path.join(RESULTS, "lenet-5"), str(tmp_path / "lenet-5"))
    assert _run(tmp_path).returncode == 0
    path = tmp_path / "lenet-5" / "test" / "decode_correct.npy"
    packed = np.load(str(path))
    packed[17] ^= 0x10
    np.save(str(path), packed)
    p = _run(tmp_path)
    assert p.returncode == 1 and "MISMATCH" in p.stdout and "lenet-5 reference->compressed" in p.stdout, p.stdout


def test_a_summary_that_is_not_its_records_is_caught(tmp_path):
    folder = tmp_path / "seeds-toy"
    for k, (b, c) in enumerate([(40, 25), (30, 31), (50, 20)], 1):
        _new_style_run(folder / ("seed-%d" % k), b, c)
    assert subprocess.run([sys.executable, os.path.join(ROOT, "tools", "summarize_seeds.py"), str(folder)],
                          capture_output=True).returncode == 0
    p = _run(folder, "--strict")
    assert p.returncode == 0, p.stdout
    s = json.loads((folder / "seeds.json").read_text())
    assert s["over_seeds_vs_control"]["shared_test_sampling"] == "per-image"
    s["runs"][0]["vs_reference"], s["runs"][0]["vs_control"] = s["runs"][0]["vs_control"], s["runs"][0]["vs_reference"]
    (folder / "seeds.json").write_text(json.dumps(s))
    p = _run(folder)
    assert p.returncode == 1 and "MISMATCH %s: differs from the summary of its records" % (folder / "seeds.json") \
        in p.stdout, p.stdout


def test_missing_files_are_flagged_and_fail_only_when_strict(tmp_path):
    run = tmp_path / "net"
    _new_style_run(run, 40, 25)
    os.unlink(str(run / "test" / "control_correct.npy"))
    p = _run(tmp_path)
    assert p.returncode == 0 and "flag     %s control->compressed: no per-image files" % run in p.stdout
    assert _run(tmp_path, "--strict").returncode == 1


@pytest.mark.parametrize("setup", ["missing", "empty", "broken"])
def test_bad_input_is_one_line(tmp_path, setup):
    root = tmp_path / "r"
    if setup != "missing":
        root.mkdir()
    if setup == "broken":
        (root / "metrics.json").write_text("{not json")
    p = _run(root)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_close_compares_floats_loosely_and_everything_else_exactly():
    assert recheck._close({"a": 1.0, "b": [1, "x"]}, {"a": 1.0 + 1e-12, "b": [1, "x"]}) == []
    assert recheck._close({"a": 1.0}, {"a": 1.001}) and recheck._close({"v": "loss"}, {"v": "no loss"})
    assert recheck._close({"a": 1}, {"a": 1, "b": 2}) == [".b: only on one side"]
    assert seeds.COMPARISONS[0][1] == "reference->compressed"
