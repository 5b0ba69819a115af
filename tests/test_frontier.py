"""tools/summarize_frontier.py: budgets over seeds side by side, the highest non-inferior one named (no Caffe)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "summarize_frontier.py")
MNIST = os.path.join(ROOT, "results", "mnist")
AT_40 = os.path.join(MNIST, "frontier-lenet-300-100", "40x")     # no loss over 5 seeds
AT_60 = os.path.join(MNIST, "seeds-lenet-300-100")               # the preset: inconclusive over 5 seeds


def run(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, timeout=120)


def copy(src, dst):
    """A budget folder's seeds.json and its seeds' schedules (what the frontier reads), not the models."""
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "seeds.json"), dst)
    for seed in sorted(os.listdir(src)):
        if seed.startswith("seed-"):
            os.makedirs(os.path.join(dst, seed))
            for name in ("metrics.json", "schedule.json"):
                shutil.copy(os.path.join(src, seed, name), os.path.join(dst, seed))
    return dst


def test_the_committed_budgets_in_order_and_the_highest_no_loss(tmp_path):
    r = run(tmp_path / "f", AT_60, AT_40, "--no-plot")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "f" / "frontier.json").read_text())
    assert [p["target_rate"] for p in doc["points"]] == [40.0, 60.0]
    for p, folder in zip(doc["points"], (AT_40, AT_60)):
        with open(os.path.join(folder, "seeds.json")) as f:
            assert p["change_pp"] == json.load(f)["over_seeds_vs_control"]   # the summary's own verdict
    assert doc["highest_no_loss"] == AT_40
    md = (tmp_path / "f" / "frontier.md").read_text()
    assert "Highest rate with no loss over seeds: **40x, 39.6x**" in md
    assert "| 60x | 5 | 59.3x ± 0.3 | 1.46% → 1.58% | 1.50% |" in md


def test_the_frontier_follows_the_summaries_verdicts(tmp_path):
    at60 = copy(AT_60, str(tmp_path / "60x"))
    with open(os.path.join(at60, "seeds.json")) as f:
        s = json.load(f)
    s["over_seeds_vs_control"]["verdict"] = "no loss"
    with open(os.path.join(at60, "seeds.json"), "w") as f:
        json.dump(s, f)
    assert run(tmp_path / "f", AT_40, at60, "--no-plot").returncode == 0
    assert json.loads((tmp_path / "f" / "frontier.json").read_text())["highest_no_loss"] == at60


@pytest.mark.parametrize("case", ["no-seeds-json", "other-net", "one-seed", "mixed-budgets", "twice"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case):
    bad = copy(AT_60, str(tmp_path / "bad"))
    if case == "no-seeds-json":
        os.remove(os.path.join(bad, "seeds.json"))
    elif case == "other-net":
        with open(os.path.join(bad, "seeds.json")) as f:
            s = json.load(f)
        with open(os.path.join(bad, "seeds.json"), "w") as f:
            json.dump(dict(s, net="lenet-5"), f)
    elif case == "one-seed":   # a summary of one seed judges nothing over seeds
        with open(os.path.join(bad, "seeds.json")) as f:
            s = json.load(f)
        with open(os.path.join(bad, "seeds.json"), "w") as f:
            json.dump({k: v for k, v in s.items() if not k.startswith("over_seeds_")}, f)
    elif case == "mixed-budgets":
        shutil.copy(os.path.join(AT_40, "seed-1", "schedule.json"), os.path.join(bad, "seed-2", "schedule.json"))
    args = (AT_40, AT_40) if case == "twice" else (AT_40, bad)
    r = run(tmp_path / "out", *args, "--no-plot")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("summarize_frontier: error: ")
    assert not (tmp_path / "out").exists()


def test_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    r = run(tmp_path / "f", AT_40, AT_60)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "f" / "frontier.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
