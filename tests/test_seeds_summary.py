"""The summary over seeds (report/seeds.py): per-seed intervals and verdicts at a margin, the interval of the
mean over seeds, provenance, and the tool that rewrites it from committed records."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from caffe_dc.algorithms import stats
from caffe_dc.report import seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "summarize_seeds.py")
N = 1000


def _models(ref_only, cmp_only, ctl_only, cmp_over_ctl):
    """Per-image correctness of reference, control and compressed model: ``ref_only`` / ``cmp_only`` images
    discordant against the reference, ``ctl_only`` / ``cmp_over_ctl`` against the control. Images are laid
    out by their (reference, control, compressed) pattern; the compressed model's losses against the
    reference are all losses against the control too, and its gains against the control gains against the
    reference, so each count is one block plus what the other comparison adds."""
    both_lose = min(ref_only, ctl_only)
    both_gain = min(cmp_only, cmp_over_ctl)
    blocks = [((1, 1, 1), 500), ((1, 1, 0), both_lose), ((1, 0, 0), ref_only - both_lose),
              ((0, 1, 0), ctl_only - both_lose), ((0, 0, 1), both_gain), ((0, 1, 1), cmp_only - both_gain),
              ((1, 0, 1), cmp_over_ctl - both_gain)]
    used = sum(k for _, k in blocks)
    assert used <= N
    pats = np.array([pat for pat, k in blocks for _ in range(k)] + [(0, 0, 0)] * (N - used), bool)
    return {"reference": pats[:, 0], "control": pats[:, 1], "decode": pats[:, 2]}


def _record(seed, rate, models, control=True, margin=0.002, command="caffe-dc reproduce toy --seeds 3"):
    """A run's metrics.json as the report stage writes it, from per-image correctness."""
    paired = {"reference->compressed": stats.paired(models["reference"], models["decode"], margin=margin)}
    if control:
        paired["control->compressed"] = stats.paired(models["control"], models["decode"], margin=margin)
    return {"net": "toy", "seed": seed, "compression": rate, "file_bytes": 1000 + seed,
            "model_sha256": "%064x" % seed, "final_test": {"n": N, "correct": int(models["decode"].sum())},
            "paired": paired, "command": command, "stages": {"reference": {"accuracy": 0.9}},
            "environment": {"git_commit": "c" * 40, "blas_kernel": "Haswell"}}


def _counts(r, key):
    c = r["paired"][key]
    return c["only_a"], c["only_b"]


def test_reference_and_control_rows_come_from_their_own_comparisons():
    # The two comparisons differ in every seed, so a summary that swapped them would fail here.
    ms = [_models(21, 10, 30, 12), _models(5, 9, 12, 9), _models(40, 10, 44, 30)]
    recs = [_record(k + 1, 40.0 + 2 * k, m) for k, m in enumerate(ms)]
    for r in recs:
        assert _counts(r, "reference->compressed") != _counts(r, "control->compressed")
    s = seeds.summarize(recs, ["r1", "r2", "r3"], "cmd", "toy")
    for row, rec in zip(s["runs"], recs):
        for name, key in (("reference", "reference->compressed"), ("control", "control->compressed")):
            got = row["vs_" + name]
            want = rec["paired"][key]
            assert (got["only_before"], got["only_after"]) == _counts(rec, key)
            assert got["diff_pp"] == pytest.approx(100 * want["diff"])
            assert got["low_pp"] == pytest.approx(100 * want["diff_low"], rel=1e-12)
            assert got["verdict"] == want["verdict"] and got["margin_pp"] == pytest.approx(0.2)
    diffs = [100 * r["paired"]["control->compressed"]["diff"] for r in recs]
    assert s["change_vs_control_pp"]["values"] == pytest.approx(diffs)
    assert s["change_vs_reference_pp"]["values"] != pytest.approx(diffs)
    assert s["no_loss_vs_control"] == sum(stats.no_loss(r["paired"]["control->compressed"]) for r in recs)
    assert s["compression"]["mean"] == pytest.approx(42.0) and s["compression"]["sd"] == pytest.approx(2.0)
    assert s["commits"] == ["c" * 40] and s["blas_kernels"] == ["Haswell"]
    # each model's test error, recounted from the per-image correctness the records were made from
    for k, name in (("reference", "reference"), ("control", "control"), ("compressed", "decode")):
        want = [100.0 * (N - m[name].sum()) / N for m in ms]
        assert s["test_error_pct"][k]["values"] == pytest.approx(want, abs=1e-9)


def test_the_mean_over_seeds_from_counts_and_from_per_image_files(tmp_path):
    ms = [_models(21, 10, 30, 12), _models(5, 9, 12, 9), _models(40, 10, 44, 30)]
    recs = [_record(k + 1, 40.0, m) for k, m in enumerate(ms)]
    s = seeds.summarize(recs, ["r1", "r2", "r3"], "cmd", "toy")
    for name, key, before in seeds.COMPARISONS:
        b = np.array([r["paired"][key]["only_a"] for r in recs])
        c = np.array([r["paired"][key]["only_b"] for r in recs])
        o = stats.over_seeds(N, c - b, c + b)
        got = s["over_seeds_vs_" + name]
        assert got["diff_pp"] == pytest.approx(100 * o["diff"])
        assert got["high_pp"] == pytest.approx(100 * o["diff_high"])
        assert got["shared_test_sampling"] == "bounded from the counts" and got["margin_pp"] == pytest.approx(0.2)
        assert got["verdict"] == stats.verdict({"diff_low": o["diff_low"], "diff_high": o["diff_high"],
                                                "margin": 0.002})
    runs = []
    for k, m in enumerate(ms):                      # the same seeds with their per-image files
        run = tmp_path / ("seed-%d" % (k + 1))
        (run / "test").mkdir(parents=True)
        for model, x in m.items():
            np.save(str(run / "test" / ("%s_correct.npy" % model)), stats.pack_correct(x))
        runs.append(str(run))
    p = seeds.summarize(recs, runs, "cmd", "toy")
    for name, key, before in seeds.COMPARISONS:
        o = stats.over_seeds(N, **stats.per_image_sums([m[before] for m in ms], [m["decode"] for m in ms]))
        got = p["over_seeds_vs_" + name]
        assert got["shared_test_sampling"] == "per-image" and got["low_pp"] == pytest.approx(100 * o["diff_low"])
        assert got["se_pp"] <= s["over_seeds_vs_" + name]["se_pp"] + 1e-12
    assert p["per_image_files"] == [1, 2, 3] and s["per_image_files"] == []
    np.save(os.path.join(runs[1], "test", "decode_correct.npy"), stats.pack_correct(ms[0]["decode"]))
    with pytest.raises(ValueError, match="metrics.json records"):   # files that disagree with the record
        seeds.summarize(recs, runs, "cmd", "toy")


def test_a_given_margin_judges_every_seed_and_the_mean():
    recs = [_record(1, 40.0, _models(21, 10, 30, 12)), _record(2, 41.0, _models(5, 9, 12, 9), margin=0.004)]
    own = seeds.summarize(recs, ["a", "b"], "cmd", "toy")
    assert [r["vs_control"]["margin_pp"] for r in own["runs"]] == pytest.approx([0.2, 0.4])
    assert own["over_seeds_vs_control"]["margin_pp"] == pytest.approx(0.2)         # the strictest
    given = seeds.summarize(recs, ["a", "b"], "cmd", "toy", margin=0.03)
    assert [r["vs_control"]["margin_pp"] for r in given["runs"]] == pytest.approx([3.0, 3.0])
    assert given["over_seeds_vs_control"]["margin_pp"] == pytest.approx(3.0) and given["margin_given_pp"] == 3.0
    assert "margin given to this summary (3.00 pp)" in seeds.markdown(given)


def test_a_record_from_before_margins_is_rejudged_and_says_so():
    rec = _record(1, 40.0, _models(40, 10, 44, 30))
    for c in rec["paired"].values():                 # as the records of 6ab90af: no margin, the old verdict words
        del c["margin"]
        c["verdict"] = "no measurable difference"
    s = seeds.summarize([rec], ["r1"], "cmd", "toy")
    row = s["runs"][0]
    assert row["recorded_rule"] == "before margins"
    assert row["vs_control"]["margin_pp"] == pytest.approx(100 * stats.default_margin(0.9))
    md = seeds.markdown(s)
    assert "**Re-judged.**" in md and "seed 1 were made before" in md
    assert "%+.2f [%+.2f, %+.2f], %s (margin %.2f)" % (
        row["vs_control"]["diff_pp"], row["vs_control"]["low_pp"], row["vs_control"]["high_pp"],
        row["vs_control"]["verdict"], row["vs_control"]["margin_pp"]) in md


def test_no_control_means_no_control_spread():
    s = seeds.summarize([_record(1, 40.0, _models(3, 3, 3, 3), control=False),
                         _record(2, 41.0, _models(3, 3, 3, 3), control=False)], ["a", "b"], "cmd", "toy")
    assert "change_vs_control_pp" not in s and "over_seeds_vs_control" not in s and "change_vs_reference_pp" in s
    assert "dense control" not in seeds.markdown(s).split("Over the")[1]


def _write_seeds(folder, recs):
    for r in recs:
        d = folder / ("seed-%d" % r["seed"])
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(r))


def test_the_tool_names_each_command_as_it_ran(tmp_path):
    recs = [_record(k, 40.0 + k, _models(21, 10, 30, 12), command="caffe-dc reproduce toy --seed %d" % k)
            for k in (1, 2)]
    _write_seeds(tmp_path, recs)
    out = subprocess.run([sys.executable, TOOL, str(tmp_path), "--margin", "0.5"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    s = json.loads((tmp_path / "seeds.json").read_text())
    assert s["seeds"] == [1, 2] and s["compression"]["mean"] == pytest.approx(41.5)
    assert s["written_by"] == "python3 tools/summarize_seeds.py %s --margin 0.5" % tmp_path
    md = (tmp_path / "seeds.md").read_text()
    assert "toy over 2 seeds" in md and "Made by 2 separate runs: seed 1 by `caffe-dc reproduce toy --seed 1`; " \
                                      "seed 2 by `caffe-dc reproduce toy --seed 2`" in md
    assert "Written by `python3 tools/summarize_seeds.py %s --margin 0.5`" % tmp_path in md


def test_the_tool_refuses_an_empty_folder(tmp_path):
    out = subprocess.run([sys.executable, TOOL, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", json.dumps({"seed": 1})])
def test_the_tool_refuses_a_broken_record_in_one_line(tmp_path, text):
    d = tmp_path / "seed-1"
    d.mkdir()
    (d / "metrics.json").write_text(text)
    (tmp_path / "seed-x").mkdir()                    # not a seed folder: ignored, not a crash
    out = subprocess.run([sys.executable, TOOL, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "seed-1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "seeds.json").exists()


@pytest.mark.parametrize("args", [["--margin", "-1"], ["--margin", "100"], ["--margin", "x"]])
def test_the_tool_refuses_a_bad_margin(tmp_path, args):
    _write_seeds(tmp_path, [_record(1, 40.0, _models(3, 3, 3, 3))])
    out = subprocess.run([sys.executable, TOOL, str(tmp_path)] + args, capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "seeds.json").exists()


def test_the_tool_refuses_per_image_files_that_disagree(tmp_path):
    m = _models(21, 10, 30, 12)
    _write_seeds(tmp_path, [_record(1, 40.0, m), _record(2, 40.0, m)])
    for k in (1, 2):
        t = tmp_path / ("seed-%d" % k) / "test"
        t.mkdir()
        for model, x in m.items():
            np.save(str(t / ("%s_correct.npy" % model)), stats.pack_correct(~x if k == 2 else x))
    out = subprocess.run([sys.executable, TOOL, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "seed-2" in out.stderr and not (tmp_path / "seeds.json").exists()
