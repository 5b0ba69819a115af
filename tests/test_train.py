"""Reference training through pycaffe via the CLI, on the embedded data."""
import json
import os

import pytest

pytest.importorskip("caffe")

from caffe_dc.pycaffe import datasets  # noqa: E402
from conftest import assert_clean_error, killed_in_chunk, run_cli  # noqa: E402


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")
@pytest.mark.parametrize("net, iters", [("lenet-300-100", 300), ("lenet-5", 60)])
def test_short_training_beats_chance(tmp_path, net, iters):
    out = tmp_path / "ref"
    p = run_cli("train", net, "--iters", iters, "--test-every", iters // 2, "--out", out,
                "--data", "fashion-mnist", "--data-root", tmp_path / "data", "--limit", 2000)
    assert p.returncode == 0, p.stderr[-2000:]
    m = json.load(open(str(out / "metrics.json")))
    assert m["accuracy"] > 0.5, m  # ten classes: chance is 0.1
    assert m["iters"] == iters and len(m["history"]) == 2
    assert os.path.getsize(m["caffemodel"]) > 100000
    assert "test accuracy" in p.stdout
    # GLOG chatter stays hidden without --verbose
    assert "solver.cpp" not in p.stderr and "net.cpp" not in p.stderr


def test_train_imagenet_net_needs_imagenet(tmp_path):
    assert_clean_error(run_cli("train", "alexnet", "--data-root", tmp_path), "ImageNet")


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")
def test_reference_training_resumes_after_a_kill(tmp_path, monkeypatch, capsys):
    from caffe_dc.stages import reference as train
    info = datasets.prepare(data="fashion-mnist", out_root=str(tmp_path / "data"), quiet=True, limit=1000)
    out = tmp_path / "ref"
    calls = killed_in_chunk(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train.train_reference("lenet-300-100", info, str(out), iters=300, snapshot_every=100, progress=False)
    assert sorted(p.name for p in out.glob("snap_iter_*")) == ["snap_iter_200.caffemodel", "snap_iter_200.solverstate"]
    m = train.train_reference("lenet-300-100", info, str(out), iters=300, snapshot_every=100, progress=True)
    assert "resuming train lenet-300-100 from iteration 200" in capsys.readouterr().out
    assert [h["iter"] for h in m["history"]] == [100, 200, 300]
    assert len(calls) == 4  # the rerun trained one piece (200..300), not three
    assert m["accuracy"] > 0.5
    assert not list(out.glob("snap_iter_*")) and os.path.isfile(m["caffemodel"])


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")
def test_resume_after_a_kill_gives_the_same_model_byte_for_byte(tmp_path, monkeypatch):
    """Caffe's restore starts the Data layer at record 0; the resumed run must read on from batch k."""
    from caffe_dc.stages import reference as train

    info = datasets.prepare(data="fashion-mnist", out_root=str(tmp_path / "data"), quiet=True, limit=1000)
    straight = train.train_reference("lenet-300-100", info, str(tmp_path / "a"), iters=300, snapshot_every=100,
                                     progress=False)
    calls = killed_in_chunk(monkeypatch, 3)          # killed after the snapshot at iteration 200
    with pytest.raises(KeyboardInterrupt):
        train.train_reference("lenet-300-100", info, str(tmp_path / "b"), iters=300, snapshot_every=100,
                              progress=False)
    resumed = train.train_reference("lenet-300-100", info, str(tmp_path / "b"), iters=300, snapshot_every=100,
                                    progress=False)
    assert len(calls) == 4
    with open(straight["caffemodel"], "rb") as a, open(resumed["caffemodel"], "rb") as b:
        assert a.read() == b.read()
