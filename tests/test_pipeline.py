"""End to end on real Caffe: `reproduce --quick`, the stage CLIs, resume after a kill, CLI errors."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from caffe_dc.base import mnist  # noqa: E402
from caffe_dc.base.fingerprint import fingerprint  # noqa: E402
from caffe_dc.base.idx import STEMS, read_idx_bytes  # noqa: E402
from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.pycaffe import datasets  # noqa: E402
from caffe_dc.pycaffe import solving  # noqa: E402
from conftest import REPO, assert_clean_error, run_cli  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")


@pytest.fixture(scope="session")
def budget_run(tmp_path_factory):
    """The quick preset with a budget instead of densities, and the control: every stage of the table runs."""
    root = tmp_path_factory.mktemp("budget")
    out = root / "run"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--dense-control", "--target-rate", "30", "--out", out,
                "--data", "fashion-mnist", "--data-root", root / "data", cwd=str(root))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, out, p


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    out = root / "run"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--dense-control", "--out", out, "--data-root", root / "data",
                cwd=str(root))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, out, p


def test_reproduce_quick_end_to_end(quick_run):
    root, out, p = quick_run
    for i, stage in enumerate(["data", "reference", "sensitivity", "choose", "prune", "quantize", "encode", "decode",
                               "caffe test", "control", "test", "report"], 1):
        assert "[%d/12] %s" % (i, stage) in p.stdout
    assert "[3/12] sensitivity: skipped (the schedule gives densities" in p.stdout
    state = json.load(open(str(out / "pipeline.json")))
    assert state["decode"]["bit_exact"] is True
    # Caffe's own binary scores the decoded model exactly as the quantized one
    assert state["caffe_test"]["decoded"]["accuracy"] == state["caffe_test"]["quantized"]["accuracy"]
    assert state["reference"]["accuracy"] > 0.5  # 10 classes: clearly beats chance
    m = json.load(open(str(out / "metrics.json")))
    assert m["compression"] > 20 and m["file_bytes"] == os.path.getsize(str(out / "model.dcz"))
    # the default data: real MNIST, its four files checked against the published md5s, and where they came from
    assert m["dataset"] == "mnist" and m["data"]["checksums"] == mnist.CANONICAL_MD5 and m["data"]["source"]
    assert (m["data"]["n_train"], m["data"]["n_val"], m["data"]["n_test"]) == (55000, 5000, 10000)
    assert state["data"]["checksums"] == mnist.CANONICAL_MD5 and state["data"]["source"] == m["data"]["source"]
    report = open(str(out / "report.md")).read()
    assert "MNIST, the paper's data set: the four published files, md5-checked, from %s." % m["data"]["source"] in report
    assert "| paper (MNIST) | 1.64% → 1.58% | 1070 KB → 27 KB | 40x |" in report
    # the dense control: the reference retrained as the compressed net was (2 rounds x 500 + 500), no masks
    assert state["control"]["iters"] == 1500 and state["control"]["restarts"] == 3
    assert "dense control, round 2: val accuracy" in p.stdout
    control = caffemodel.load_params(state["control"]["caffemodel"])
    assert "ip1_mask" not in control and np.count_nonzero(control["ip1"].blobs[0]) == control["ip1"].blobs[0].size
    ctest = state["test"]["models"]["control"]
    assert m["control_accuracy"] == ctest["accuracy"] == ctest["correct"] / ctest["n"]
    assert "| dense control: reference retrained 1500 iterations in 3 restarts, uncompressed | %.2f%% | %d/%d = " \
        % (100 * state["control"]["accuracy"], ctest["correct"], ctest["n"]) in report
    # the final figures are exact counts on the test split, with intervals and paired comparisons
    assert m["final_test"]["n"] == m["reference_test"]["n"] == 10000
    assert m["final_accuracy"] == m["final_test"]["correct"] / 10000
    assert abs(state["caffe_test"]["accuracy"] - m["final_accuracy"]) < 1e-6
    assert "95% CI" in report and "McNemar" in report and "validation split" in report
    assert m["paired"]["reference->compressed"]["n"] == 10000 and "control->compressed" in m["paired"]
    assert m["environment"]["numpy"] and m["data"]["n_val"] == 5000 and m["command"].startswith("caffe-dc reproduce")
    assert "Accuracy change, dense control → compressed" in report
    # readable: the schedule is a collapsed block under Settings, not one JSON line among the provenance
    assert "<details><summary>The schedule (" in report and '"iters_per_round": 500' in report
    assert max(len(line) for line in report.splitlines() if line.startswith("- ")) < 400
    assert "W% ours / paper" in report and "| ip1 | 235200 | 8.0% / 8.0% |" in report
    for png in ("weights_before_after_pruning.png", "codebook.png", "size_waterfall.png"):
        assert os.path.getsize(str(out / png)) > 5000
        assert png in report
    # every claim names its margin (the default rule on the reference's validation accuracy), and the run
    # folder's comparisons recompute from its own per-image files
    from caffe_dc.algorithms import stats
    for c in m["paired"].values():
        assert c["margin"] == stats.default_margin(state["reference"]["accuracy"])
        assert c["verdict"] == stats.verdict(c) and stats.claim(c) in report
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "recheck_claims.py"), str(out), "--strict"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "4 checks: 4 ok" in r.stdout, r.stdout + r.stderr


def test_decoded_weights_bit_exact_and_decode_verify(quick_run, tmp_path):
    root, out, _ = quick_run
    q = caffemodel.load_params(str(out / "quantize" / "quantized.caffemodel"))
    d = caffemodel.load_params(str(out / "decoded.caffemodel"))
    for name in ("ip1", "ip2", "ip3"):
        for a, b in zip(q[name].blobs, d[name].blobs):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
        w = d[name].blobs[0]
        cb = q[name + "_codebook"].blobs[0]
        assert np.unique(w[w != 0]).size <= cb.size - 1
    p = run_cli("decode", out / "model.dcz", "-o", tmp_path / "again.caffemodel",
                "--verify", out / "quantize" / "quantized.caffemodel")
    assert p.returncode == 0, p.stderr
    assert "bit-identical to" in p.stdout


def test_rerun_skips_finished_stages(quick_run):
    root, out, _ = quick_run
    before = os.path.getmtime(str(out / "model.dcz"))
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--dense-control", "--out", out, "--data-root", root / "data",
                cwd=str(root))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("done before with the same inputs, skipping") == 10   # all but sensitivity, choose
    assert os.path.getmtime(str(out / "model.dcz")) == before


def _rerun_copy(quick_run, tmp_path, *options):
    """The quick run copied to tmp_path/run and run again there with ``options`` added: (folder, process)."""
    root, out, _ = quick_run
    run = tmp_path / "run"
    shutil.copytree(str(out), str(run))
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--dense-control", *options, "--out", run,
                "--data-root", root / "data", cwd=str(root))
    assert p.returncode == 0, p.stderr[-2000:]
    return run, p


def test_rerun_with_changed_settings_redoes_the_affected_stages(quick_run, tmp_path):
    out = quick_run[1]
    run, p = _rerun_copy(quick_run, tmp_path, "--bits", "5")
    for stage in ("data", "reference", "prune", "control"):
        assert "] %s: done before with the same inputs, skipping" % stage in p.stdout
    assert "[6/12] quantize: settings changed: bits; redoing it" in p.stdout
    for stage in ("encode", "decode", "caffe test", "test", "report"):
        assert "] %s: an earlier stage or the code changed; redoing it" % stage in p.stdout
    state = json.load(open(str(run / "pipeline.json")))
    assert set(state["quantize"]["bits"].values()) == {5}
    assert os.path.getsize(str(run / "model.dcz")) < os.path.getsize(str(out / "model.dcz"))


def test_a_margin_redoes_only_the_verdicts(quick_run, tmp_path):
    run, p = _rerun_copy(quick_run, tmp_path, "--margin", "0.5")
    assert "[11/12] test: settings changed: margin_pp; redoing it" in p.stdout
    assert p.stdout.count("done before with the same inputs, skipping") == 8   # all but these two and the skipped
    m = json.load(open(str(run / "metrics.json")))
    assert {c["margin"] for c in m["paired"].values()} == {0.005}
    assert "0.50 pp" in (run / "report.md").read_text()


def test_mnist_from_a_mirror_and_given_with_idx_is_the_same_data(quick_run, tmp_path, monkeypatch):
    """The published files from a mirror (the files the quick run fetched, served over loopback) pass the md5s;
    the same files given with --idx are recognised as MNIST and reuse its LMDBs, recorded with their source."""
    from test_datasets import _serve

    root, _, _ = quick_run
    cache, data = root / "data" / datasets.MNIST_CACHE, tmp_path / "d"
    url, server = _serve(cache)
    try:
        monkeypatch.setenv("CAFFE_DC_MNIST_URL", url)
        p = run_cli("data", "--download", "mnist", "--data-root", data, "--limit", 100)
    finally:
        server.shutdown()
    assert p.returncode == 0, p.stdout + p.stderr
    meta = json.load(open(str(data / "mnist-100" / "meta.json")))
    assert meta["source"] == "the published files from " + url and meta["checksums"] == mnist.CANONICAL_MD5
    for stem in STEMS:
        assert read_idx_bytes(str(data / datasets.MNIST_CACHE / (stem + ".gz"))) == \
            read_idx_bytes(str(cache / (stem + ".gz")))
    p = run_cli("data", "--idx", cache, "--data-root", data, "--limit", 100)
    assert p.returncode == 0 and "data: reusing %s" % (data / "mnist-100") in p.stdout, p.stdout + p.stderr


def test_default_run_folder_names_what_distinguishes_the_run():
    from types import SimpleNamespace

    from caffe_dc.pipeline.reproduce import default_run_dir
    from caffe_dc.stages.run import DataOptions, RunOptions

    src, info = SimpleNamespace(name="lenet-5"), SimpleNamespace(name="mnist")
    plain = RunOptions(net="lenet-5", init="linear", seed=1)
    assert default_run_dir(src, info, "full", plain) == os.path.join("runs", "lenet-5-mnist")
    a = default_run_dir(src, info, "full", plain.replace(bits={"ip1": 5}))
    b = default_run_dir(src, info, "full", plain.replace(bits={"ip1": 6}))
    c = default_run_dir(src, info, "full", plain.replace(data=DataOptions(limit=100)))
    assert len({a, b, c}) == 3 and a.startswith(os.path.join("runs", "lenet-5-mnist-"))


def test_dense_control_added_to_a_finished_run_remakes_the_report(quick_run, tmp_path):
    root, out, _ = quick_run
    run = tmp_path / "run"
    shutil.copytree(str(out), str(run))
    state = json.load(open(str(run / "pipeline.json")))
    del state["control"]
    (run / "pipeline.json").write_text(json.dumps(state))
    (run / "report.md").write_text("stale")
    args = ["reproduce", "lenet-300-100", "--quick", "--out", run, "--data-root", root / "data"]
    p = run_cli(*args, cwd=str(root))
    assert p.returncode == 0, p.stderr[-2000:]
    # without the flag: no control, and the report says so (it is remade without the control row)
    assert "control: skipped (--dense-control" in p.stdout and "[9/12] caffe test: done before" in p.stdout
    assert "dense control" not in (run / "report.md").read_text()
    p = run_cli(*args, "--dense-control", cwd=str(root))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "[10/12] control ..." in p.stdout and "[12/12] report ..." in p.stdout
    assert "dense control: reference retrained 1500 iterations" in (run / "report.md").read_text()


def test_inspect_prints_paper_table(quick_run):
    _, out, _ = quick_run
    p = run_cli("inspect", out / "model.dcz")
    assert p.returncode == 0, p.stderr
    assert "rate P+Q+H ours / paper" in p.stdout and "paper (lenet-300-100, Table 2)" in p.stdout
    assert "ip1" in p.stdout and "total" in p.stdout


def test_encode_any_caffemodel_post_hoc(quick_run, tmp_path):
    root, out, _ = quick_run
    ref = out / "reference" / "lenet-300-100.caffemodel"
    blob = tmp_path / "ref.dcz"
    p = run_cli("encode", os.path.join(REPO, "prototxt", "lenet_300_100_train_val.prototxt"), ref, "-o", blob,
                "--density", "0.1", "--bits", "5")
    assert p.returncode == 0, p.stderr
    assert "post hoc" in p.stdout
    dec = tmp_path / "ref.caffemodel"
    assert run_cli("decode", blob, "-o", dec, "--verify").returncode == 0
    params = caffemodel.load_params(str(dec))
    w = params["ip1"].blobs[0]
    assert abs(np.count_nonzero(w) / w.size - 0.1) < 0.001
    assert np.unique(w[w != 0]).size <= 31
    # Caffe loads it and runs it
    acc = solving.caffe_cli_test(str(out / "train_val.prototxt"), str(dec), 5)["accuracy"]
    assert 0.0 <= acc <= 1.0


def test_corrupt_and_truncated_blobs_get_clean_errors(quick_run, tmp_path):
    _, out, _ = quick_run
    data = open(str(out / "model.dcz"), "rb").read()
    (tmp_path / "trunc.dcz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x10
    (tmp_path / "flip.dcz").write_bytes(bytes(flipped))
    (tmp_path / "junk.dcz").write_bytes(b"not a blob at all")
    for name in ("trunc.dcz", "flip.dcz", "junk.dcz"):
        p = run_cli("decode", tmp_path / name, "-o", tmp_path / (name + ".caffemodel"))
        assert_clean_error(p)
        assert not os.path.exists(str(tmp_path / (name + ".caffemodel")))
        assert_clean_error(run_cli("inspect", tmp_path / name))
    assert_clean_error(run_cli("decode", tmp_path / "missing.dcz"), "no such compressed blob")


def test_decode_never_overwrites_its_input(quick_run, tmp_path):
    _, out, _ = quick_run
    blob = tmp_path / "m.dcz"
    blob.write_bytes(open(str(out / "model.dcz"), "rb").read())
    assert_clean_error(run_cli("decode", blob, "-o", blob), "overwrite")
    assert blob.read_bytes() == open(str(out / "model.dcz"), "rb").read()


def test_stage_cli_errors(quick_run, tmp_path):
    root, out, _ = quick_run
    ref = str(out / "reference" / "lenet-300-100.caffemodel")
    common = ["--data-root", str(root / "data")]
    assert_clean_error(run_cli("prune", "lenet-300-100", ref, "--density", "ip9=0.1", *common), "ip9")
    assert_clean_error(run_cli("prune", "lenet-300-100", ref, "--quality", "0", *common), "quality")
    assert_clean_error(run_cli("prune", "lenet-300-100", ref, "--density", "1.5", *common), "density")
    assert_clean_error(run_cli("prune", "lenet-300-100", ref, "--density", "0", *common), "density")
    assert_clean_error(run_cli("prune", "lenet-300-100", ref, "--layers", "relu1", *common), "cannot be pruned")
    assert_clean_error(run_cli("prune", "lenet-300-100", str(tmp_path / "nope.caffemodel"), *common), "no such caffemodel")
    # a LeNet-300-100 caffemodel does not fit LeNet-5
    assert_clean_error(run_cli("prune", "lenet-5", ref, *common), "caffemodel")
    assert_clean_error(run_cli("quantize", "lenet-300-100", ref, "--bits", "ip1=0", *common), "bits")
    assert_clean_error(run_cli("train", "vgg99", *common), "unknown net")
    assert_clean_error(run_cli("encode", os.path.join(REPO, "prototxt", "lenet5_train_val.prototxt"), ref,
                               "-o", tmp_path / "x.dcz"), "do not belong together")


def test_prune_resumes_after_kill(quick_run, tmp_path):
    root, out, _ = quick_run
    ref = str(out / "reference" / "lenet-300-100.caffemodel")
    run_dir = tmp_path / "prune"
    args = [sys.executable, "-m", "caffe_dc", "prune", "lenet-300-100", ref, "--rounds", "2", "--iters", "3000",
            "--out", str(run_dir), "--data-root", str(root / "data")]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    snap_dir = run_dir / "round1" / "retrain"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list(snap_dir.glob("snap_iter_*.solverstate")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "round1" / "retrained.caffemodel").exists()
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, universal_newlines=True)
    assert p.returncode == 0, p.stdout[-3000:]
    assert "resuming prune round 1 from iteration" in p.stdout
    params = caffemodel.load_params(str(run_dir / "pruned.caffemodel"))
    for n in ("ip1", "ip2", "ip3"):
        mask = params[n + "_mask"].blobs[0]
        assert np.all(params[n].blobs[0][mask == 0] == 0)
    m = json.load(open(str(run_dir / "metrics.json")))
    assert m["density"] < 0.09


def test_encode_refuses_shapes_that_do_not_fit_the_prototxt(quick_run, tmp_path):
    _, out, _ = quick_run
    params = caffemodel.load_params(str(out / "reference" / "lenet-300-100.caffemodel"))
    w, b = params["ip2"].blobs
    params["ip2"] = caffemodel.LayerParams("InnerProduct", [w[:50], b[:50]])  # 50 outputs, not 100
    bad = str(tmp_path / "bad.caffemodel")
    caffemodel.save_params(params, bad)
    deploy = os.path.join(REPO, "prototxt", "lenet_300_100_deploy.prototxt")
    assert_clean_error(run_cli("encode", deploy, bad, "-o", tmp_path / "bad.dcz"), "ip2")
    assert not (tmp_path / "bad.dcz").exists()


def test_reproduce_runs_on_user_supplied_idx(tmp_path):
    """The same command on MNIST-format files the user brings (here a small synthetic set)."""
    from test_datasets import make_idx_dir

    # 207 test images: not a multiple of the net's test batch (100); the exact batch is 69
    make_idx_dir(str(tmp_path / "mnist"), n_train=200, n_test=207)
    out = tmp_path / "run"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--idx", tmp_path / "mnist", "--out", out,
                "--data-root", tmp_path / "data", cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    m = json.load(open(str(out / "metrics.json")))
    # another MNIST-format set is named by its md5s, so it never shares real MNIST's LMDBs or run folders
    sums = {stem: hashlib.md5(read_idx_bytes(datasets.find_idx(str(tmp_path / "mnist"), stem))).hexdigest()
            for stem in STEMS}
    name = "idx-" + fingerprint(sums)[:8]
    assert m["dataset"] == name and m["data"] == {"name": name, "n_train": 167, "n_val": 33, "n_test": 207,
                                                  "source": str(tmp_path / "mnist"), "checksums": sums}
    report = open(str(out / "report.md")).read()
    assert "not the paper's data set" in report and "MNIST, the paper's data set" not in report
    # Every accuracy reported is the exact count of the test images, each counted once: checked against an
    # independent forward pass of the decoded model over the raw test images in Python.
    images, labels = datasets.read_lmdb(str(tmp_path / "data" / name / "test_lmdb"))
    net = caffe.Net(os.path.join(REPO, "prototxt", "lenet_300_100_deploy.prototxt"), caffe.TEST,
                    weights=str(out / "decoded.caffemodel"))
    net.blobs["data"].reshape(images.shape[0], 1, 28, 28)
    net.blobs["data"].data[...] = images.astype(np.float32) * np.float32(0.00390625)
    out_blob = net.outputs[0]
    correct = int((net.forward()[out_blob].argmax(axis=1) == labels).sum())
    assert m["final_test"]["correct"] == correct and m["final_test"]["n"] == 207
    assert m["final_accuracy"] == correct / 207
    state = json.load(open(str(out / "pipeline.json")))
    assert abs(state["caffe_test"]["accuracy"] - correct / 207) < 1e-6
    assert "%d/207 = %.2f%%" % (correct, 100 * correct / 207) in report


def test_a_budget_is_chosen_on_the_users_own_validation_split(tmp_path):
    """The same budget command on another MNIST-format set: sensitivity and choice on that set's val split."""
    from test_datasets import make_idx_dir

    make_idx_dir(str(tmp_path / "mnist"), n_train=300, n_test=100)
    out = tmp_path / "run"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--idx", tmp_path / "mnist", "--target-rate", "20",
                "--out", out, "--data-root", tmp_path / "data", cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    m = json.load(open(str(out / "metrics.json")))
    sens = json.load(open(str(out / "sensitivity" / "sensitivity.json")))
    assert sens["lmdb"].endswith(os.path.join(m["dataset"], "val_lmdb")) and sens["images"] == m["data"]["n_val"] == 50
    assert m["schedule"]["budget"]["target_rate"] == 20 and abs(m["compression"] / 20 - 1) <= 0.1


def test_decode_max_weights_limit(quick_run, tmp_path):
    _, out, _ = quick_run
    assert_clean_error(run_cli("decode", out / "model.dcz", "-o", tmp_path / "x.caffemodel", "--max-weights", 1000),
                       "max_weights")
    assert not (tmp_path / "x.caffemodel").exists()


def test_recipe_sweep_counts_the_validation_split(quick_run, tmp_path):
    """tools/sweep_recipes.py on a finished run: each variant counted on all of val, the run's own as baseline."""
    root, out, _ = quick_run
    dest, work = tmp_path / "recipes", tmp_path / "work"
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sweep_recipes.py"), "--net", "lenet-300-100",
                        "--run", str(out), "--out", str(dest), "--work", str(work), "--only", "finetune",
                        "--data-root", str(root / "data")], cwd=str(root), capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(dest / "recipes.json") as f:
        doc = json.load(f)
    ft = doc["schedule"]["finetune_iters"]
    assert doc["split"] == "validation" and doc["n"] == 5000
    rows = {(r["group"], r["variant"]): r for r in doc["rows"]}
    assert set(rows) == {("pruning", "run"), ("fine-tuning", "run"), ("fine-tuning", "mean-%d" % ft),
                         ("fine-tuning", "sum-%d" % (3 * ft)), ("fine-tuning", "mean-%d" % (3 * ft))}
    for r in doc["rows"]:
        assert 0 < r["correct"] <= r["n"] == 5000
        assert r["wilson"][0] <= r["accuracy"] <= r["wilson"][1]
    with open(work / ("mean-%d" % ft) / "metrics.json") as f:
        assert json.load(f)["config"]["centroid_grad"] == "mean"
    assert "never on test" in (dest / "recipes.md").read_text()


def _stage_lines(stdout):
    """{stage label: 'skip' | 'redo' | 'new'} from a rerun's [i/N] lines."""
    import re

    out = {}
    for m in re.finditer(r"^\[\d+/\d+\] ([a-z ]+?)(: done before| \.\.\.|: skipped)", stdout, re.M):
        label, what = m.group(1), m.group(2)
        if what == ": done before":
            out[label] = "skip"
        elif what == " ...":
            out.setdefault(label, "redo")
    return out


@pytest.mark.parametrize("stage", [s.name for s in __import__("caffe_dc.pipeline.stage_table",
                                                                fromlist=["STAGES"]).STAGES])
def test_editing_a_stage_module_redoes_it_and_what_reads_it(budget_run, tmp_path, stage):
    """A comment appended to the module that holds one stage's code (a copy of the package) makes a
    rerun redo that stage and every stage that reads it, and reuse every other stage."""
    from caffe_dc.pipeline.stage_table import STAGES
    from test_stage_table import descendants

    root, out, _ = budget_run
    run = tmp_path / "run"
    shutil.copytree(str(out), str(run))
    pkg = tmp_path / "pkg"
    shutil.copytree(os.path.join(REPO, "caffe_dc"), str(pkg / "caffe_dc"))
    row = next(s for s in STAGES if s.name == stage)
    with open(str(pkg / "caffe_dc" / row.code_parts[-1]), "a") as f:
        f.write("\n# an edit that changes nothing but the code's hash\n")
    env = dict(os.environ, PYTHONPATH=str(pkg))
    p = subprocess.run([sys.executable, "-m", "caffe_dc", "reproduce", "lenet-300-100", "--quick", "--dense-control",
                        "--target-rate", "30", "--out", str(run), "--data", "fashion-mnist", "--data-root",
                        str(root / "data")], cwd=str(root), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    seen = _stage_lines(p.stdout)
    redo = {stage} | descendants(stage)
    first = [s.name for s in STAGES].index(stage)
    for i, s in enumerate(STAGES):
        want = "redo" if s.name in redo else "skip"
        assert seen.get(s.label) == want, (s.name, seen, p.stdout[-3000:])
        if i < first:
            assert seen[s.label] == "skip"


def test_a_target_rate_is_met_by_the_file(budget_run):
    root, out, p = budget_run
    m = json.load(open(str(out / "metrics.json")))
    assert abs(m["compression"] / 30.0 - 1) <= 0.05, m["compression"]
    chosen = m["stages"]["choose"]
    assert chosen["estimate"] == "file" and m["schedule"]["densities"] and m["schedule"]["budget"]["target_rate"] == 30
    assert m["stages"]["sensitivity"]["images"] == m["data"]["n_val"]   # chosen on the whole validation split
    assert "[3/12] sensitivity ..." in p.stdout and "[4/12] choose ..." in p.stdout


def test_a_changed_budget_redoes_choose_and_what_follows_not_the_reference(budget_run, tmp_path):
    root, out, _ = budget_run
    run = tmp_path / "run"
    shutil.copytree(str(out), str(run))
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--dense-control", "--target-rate", "25", "--out", run,
                "--data", "fashion-mnist", "--data-root", root / "data", cwd=str(root))
    assert p.returncode == 0, p.stderr[-2000:]
    seen = _stage_lines(p.stdout)
    assert {k for k, v in seen.items() if v == "skip"} == {"data", "reference", "sensitivity"}
    assert "[4/12] choose: settings changed: budget; redoing it" in p.stdout
    m = json.load(open(str(run / "metrics.json")))
    assert abs(m["compression"] / 25.0 - 1) <= 0.05, m["compression"]


def test_seeds_write_a_summary_of_their_own_runs(tmp_path):
    """`reproduce --seeds 2`: two runs (seed 1 and 2) in seed-N folders, and seeds.json / seeds.md made from
    their records: each seed's rate, sha256 and paired change as its run wrote them."""
    import hashlib

    out = tmp_path / "seeds"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--seeds", "2", "--out", out, "--data", "fashion-mnist",
                "--data-root", tmp_path / "data", cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.load(open(str(out / "seeds.json")))
    assert s["seeds"] == [1, 2] and [r["run"] for r in s["runs"]] == [str(out / "seed-1"), str(out / "seed-2")]
    for r in s["runs"]:
        m = json.load(open(str(out / ("seed-%d" % r["seed"]) / "metrics.json")))
        blob = (out / ("seed-%d" % r["seed"]) / "model.dcz").read_bytes()
        assert r["model_sha256"] == m["model_sha256"] == hashlib.sha256(blob).hexdigest()
        assert r["rate"] == m["compression"] and r["seed"] == m["seed"]
        assert r["vs_reference"]["diff_pp"] == pytest.approx(100 * m["paired"]["reference->compressed"]["diff"])
    assert "change_vs_reference_pp" in s and "change_vs_control_pp" not in s   # no --dense-control
    assert "lenet-300-100 over 2 seeds" in (out / "seeds.md").read_text()


def test_a_second_run_into_a_busy_folder_is_refused_and_the_first_is_unharmed(quick_run, tmp_path):
    """Two runs into one folder (issue 30): the second exits 2 at once with one line naming the first, and
    the first finishes with the model.dcz it makes alone (``quick_run``, the same command elsewhere)."""
    import hashlib

    root, out, _ = quick_run
    run = tmp_path / "run"
    args = ["reproduce", "lenet-300-100", "--quick", "--dense-control", "--out", run, "--data-root", root / "data"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    first = subprocess.Popen([sys.executable, "-m", "caffe_dc"] + list(map(str, args)), cwd=str(root), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        lock = run / ".caffe-dc.lock"
        deadline = time.time() + 120
        while not (lock.exists() and '"pid": %d' % first.pid in lock.read_text()):
            assert first.poll() is None and time.time() < deadline, "the first run never took its folder"
            time.sleep(0.2)
        t0 = time.time()
        second = run_cli(*(args + ["--density", "ip1=0.04"]), cwd=str(root))
        assert time.time() - t0 < 30
        assert_clean_error(second, "in use by another run", "pid %d" % first.pid)
        assert second.returncode == 2
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stdout[-2000:] + stderr[-2000:]
    digest = [hashlib.sha256((d / "model.dcz").read_bytes()).hexdigest() for d in (out, run)]
    assert digest[0] == digest[1]
