"""The summary over seeds (report/seeds.py): per-seed intervals and verdicts, mean ± sd, no-loss counts."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from caffe_dc.algorithms import stats
from caffe_dc.report import seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(seed, rate, ref_only, cmp_only, control=True, n=1000):
    """A run's metrics.json as the report stage writes it, with ``ref_only`` / ``cmp_only`` discordant images."""
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:500] = b[:500] = True
    a[500:500 + ref_only] = True
    b[500 + ref_only:500 + ref_only + cmp_only] = True
    paired = {"reference->compressed": stats.paired(a, b)}
    if control:
        paired["control->compressed"] = stats.paired(a, b)
    return {"net": "toy", "seed": seed, "compression": rate, "file_bytes": 1000 + seed,
            "model_sha256": "%064x" % seed, "final_test": {"n": n, "correct": int(b.sum())},
            "paired": paired, "command": "caffe-dc reproduce toy --seeds 3",
            "environment": {"git_commit": "c" * 40, "blas_kernel": "Haswell"}}


def test_each_seed_has_its_interval_verdict_and_hash():
    recs = [_record(1, 40.0, 21, 10), _record(2, 42.0, 0, 0), _record(3, 44.0, 5, 30)]
    s = seeds.summarize(recs, ["r1", "r2", "r3"], "cmd", "toy")
    rows = s["runs"]
    assert [r["seed"] for r in rows] == [1, 2, 3]
    assert rows[0]["vs_control"]["diff_pp"] == pytest.approx(-1.1)
    assert rows[0]["vs_control"]["verdict"] == stats.verdict(recs[0]["paired"]["control->compressed"])
    assert rows[1]["vs_control"]["verdict"] == stats.NO_DIFFERENCE
    assert rows[2]["vs_reference"]["verdict"] == stats.GAIN
    assert rows[0]["model_sha256"] == "%064x" % 1
    assert s["compression"]["mean"] == pytest.approx(42.0) and s["compression"]["sd"] == pytest.approx(2.0)
    diffs = [-1.1, 0.0, 2.5]
    assert s["change_vs_control_pp"]["values"] == pytest.approx(diffs)
    assert s["change_vs_control_pp"]["sd"] == pytest.approx(np.std(diffs, ddof=1))
    losses = sum(stats.verdict(r["paired"]["control->compressed"]) == stats.LOSS for r in recs)
    assert s["no_loss_vs_control"] == 3 - losses
    assert s["commits"] == ["c" * 40] and s["blas_kernels"] == ["Haswell"]


def test_the_interval_in_the_table_is_the_records():
    rec = _record(1, 40.0, 40, 10)
    md = seeds.markdown(seeds.summarize([rec], ["r1"], "cmd", "toy"))
    c = rec["paired"]["control->compressed"]
    assert "%+.2f [%+.2f, %+.2f], loss" % (100 * c["diff"], 100 * c["diff_low"], 100 * c["diff_high"]) in md
    assert "no loss in 0 of 1 seeds" in md


def test_no_control_means_no_control_spread():
    s = seeds.summarize([_record(1, 40.0, 3, 3, control=False), _record(2, 41.0, 3, 3, control=False)],
                        ["a", "b"], "cmd", "toy")
    assert "change_vs_control_pp" not in s and "change_vs_reference_pp" in s
    assert "dense control" not in seeds.markdown(s).split("Mean")[1]


def test_the_tool_rewrites_a_folder_of_committed_records(tmp_path):
    for k, (b, c) in enumerate([(21, 10), (12, 12)], 1):
        d = tmp_path / ("seed-%d" % k)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(_record(k, 40.0 + k, b, c)))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "summarize_seeds.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    s = json.loads((tmp_path / "seeds.json").read_text())
    assert s["seeds"] == [1, 2] and s["compression"]["mean"] == pytest.approx(41.5)
    assert "toy over 2 seeds" in (tmp_path / "seeds.md").read_text()


def test_the_tool_refuses_an_empty_folder(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "summarize_seeds.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", json.dumps({"seed": 1})])
def test_the_tool_refuses_a_broken_record_in_one_line(tmp_path, text):
    d = tmp_path / "seed-1"
    d.mkdir()
    (d / "metrics.json").write_text(text)
    (tmp_path / "seed-x").mkdir()                    # not a seed folder: ignored, not a crash
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "summarize_seeds.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "seed-1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "seeds.json").exists()
