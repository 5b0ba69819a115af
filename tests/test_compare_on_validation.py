"""tools/compare_on_validation.py: the pairing and the over-seeds rule a recipe is chosen by, and its bad input."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import compare_on_validation as cov  # noqa: E402


def _pair(n, right_a, right_b, rng):
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[rng.choice(n, right_a, replace=False)] = True
    b[rng.choice(n, right_b, replace=False)] = True
    return a, b


def test_a_clearly_better_recipe_is_chosen_and_noise_is_not():
    rng = np.random.default_rng(0)
    n = 5000
    # B right on every image A gets right, plus 40 more, in each of three seeds: +0.8 pp, consistent
    per_a, per_b = [], []
    for _ in range(3):
        a = rng.random(n) < 0.99
        b = a.copy()
        b[np.flatnonzero(~a)[:40]] = True
        per_a.append(a)
        per_b.append(b)
    out = cov.compare(per_a, per_b, margin=0.002)
    assert out["over_seeds"]["b_better"]
    assert abs(out["over_seeds"]["diff"] - 40 / n) < 1e-12
    assert [c["only_b"] for c in out["per_seed"]] == [40, 40, 40]
    # seeds that disagree in sign (+8, -6, +7 images, independent errors): the mean is positive, the interval is not
    noisy_a, noisy_b = [], []
    for right_b in (4958, 4944, 4957):
        a, b = _pair(n, 4950, right_b, rng)
        noisy_a.append(a)
        noisy_b.append(b)
    out = cov.compare(noisy_a, noisy_b, margin=0.002)
    assert out["over_seeds"]["diff"] > 0
    assert not out["over_seeds"]["b_better"]
    assert out["over_seeds"]["diff_low"] < 0 < out["over_seeds"]["diff_high"]


def test_one_seed_gives_no_verdict_over_seeds():
    rng = np.random.default_rng(1)
    a, b = _pair(1000, 990, 995, rng)
    out = cov.compare([a], [b], margin=0.002)
    assert "over_seeds" not in out and out["per_seed"][0]["n"] == 1000


def _run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compare_on_validation.py")] + list(args),
                          capture_output=True, text=True, timeout=120)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline.json").write_text(json.dumps({"data": {"n_val": 100}, "reference": {"done": True}}))
    out = tmp_path / "cmp"
    for args, says in [(["--a", str(run), "--b", str(run), str(run)], "pair them by seed"),
                       (["--a", str(tmp_path), "--b", str(run)], "not a run folder"),
                       (["--a", str(run), "--b", str(run)], "no finished model")]:
        p = _run(*args, "--out", str(out))
        assert p.returncode == 2, p.stderr
        assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(str(out) + ".json")
