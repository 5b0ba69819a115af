"""A real client: OpenCV 4.x's own Caffe importer runs the caffemodels we decode without pycaffe.

OpenCV's ``dnn`` module shares no code with Caffe or caffe-dc, so a caffemodel
it loads and scores as Caffe did is a caffemodel in Caffe's format, not one
only our reader understands. Checked: its top-1 count on the Fashion-MNIST
test split equals the count in the run's metrics.json (the committed LeNet
results, and a quick run made here where Caffe is installed), and, where
pycaffe is installed, its outputs equal Caffe's forward pass within float
tolerance. OpenCV 5 dropped the Caffe importer, hence ``<5``.
"""
import json
import os

import numpy as np
import pytest

from conftest import REPO, need, need_module, run_cli  # noqa: E402

cv2 = need_module("cv2", "cv2")
need("cv2", int(cv2.__version__.split(".")[0]) < 5 and hasattr(cv2, "dnn"),
     "OpenCV %s has no Caffe importer (it is in 4.x)" % cv2.__version__)

from caffe_dc.base import idx  # noqa: E402  (numpy only: the IDX reader)
from test_caffe_free import cli_without_caffe  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
DEPLOY = {"lenet-300-100": "lenet_300_100_deploy.prototxt", "lenet-5": "lenet5_deploy.prototxt"}


@pytest.fixture
def needs_data():
    need("fashion-mnist", os.path.isdir(FASHION), "the Debian package dataset-fashion-mnist")


def _test_split():
    images, labels = idx.load_split(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"),
                                    os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    # the deploy nets take what the train_val Data layers make of the bytes: x / 256, one channel
    return images.reshape(-1, 1, 28, 28).astype(np.float32) * np.float32(1 / 256.0), labels.astype(np.int64)


def _opencv_scores(deploy, caffemodel, x, batch=500):
    net = cv2.dnn.readNetFromCaffe(deploy, caffemodel)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    out = []
    for i in range(0, len(x), batch):
        net.setInput(x[i:i + batch])
        out.append(net.forward().reshape(len(x[i:i + batch]), -1).copy())
    return np.concatenate(out)


def _decode(dcz, tmp_path):
    model = tmp_path / "decoded.caffemodel"
    p = cli_without_caffe("decode", dcz, "-o", model)
    assert p.returncode == 0, p.stderr
    return str(model)


def _check_run(net, run_dir, tmp_path):
    deploy = os.path.join(REPO, "prototxt", DEPLOY[net])
    model = _decode(os.path.join(run_dir, "model.dcz"), tmp_path)
    x, labels = _test_split()
    scores = _opencv_scores(deploy, model, x)
    correct = int(np.sum(scores.argmax(1) == labels))
    expected = json.load(open(os.path.join(run_dir, "metrics.json")))["final_test"]
    assert expected["n"] == len(labels)
    assert correct == expected["correct"]
    return deploy, model, x, scores


def _caffe_agrees(deploy, model, x, scores):
    caffe = pytest.importorskip("caffe")
    net = caffe.Net(deploy, caffe.TEST, weights=model)
    n = net.blobs["data"].data.shape[0]
    for i in range(0, 2000, n):
        net.blobs["data"].data[...] = x[i:i + n]
        ref = net.forward()[net.outputs[-1]].reshape(n, -1)
        np.testing.assert_allclose(scores[i:i + n], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("needs_data")
@pytest.mark.parametrize("net", ["lenet-300-100", "lenet-5"])
def test_committed_results_score_the_same_in_opencv(net, tmp_path):
    deploy, model, x, scores = _check_run(net, os.path.join(REPO, "results", net), tmp_path)
    if os.environ.get("CAFFE_DC_REQUIRE_CAFFE", "") not in ("", "0"):
        _caffe_agrees(deploy, model, x, scores)


@pytest.mark.usefixtures("needs_data")
def test_quick_run_scores_the_same_in_opencv(tmp_path):
    pytest.importorskip("caffe")
    out = tmp_path / "run"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--out", out, "--data", "fashion-mnist",
                "--data-root", tmp_path / "data", cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    _caffe_agrees(*_check_run("lenet-300-100", str(out), tmp_path))


@pytest.mark.parametrize("net", ["lenet-300-100", "lenet-5"])
def test_opencv_reads_every_blob_bit_for_bit(net, tmp_path):
    """Needs no data set (so it runs in the Caffe-free venv too): OpenCV's reader gets our blobs exactly."""
    import caffe_dc

    dcz = os.path.join(REPO, "results", net, "model.dcz")
    model = _decode(dcz, tmp_path)
    cvnet = cv2.dnn.readNetFromCaffe(os.path.join(REPO, "prototxt", DEPLOY[net]), model)
    for name, blobs in caffe_dc.load_arrays(dcz).items():
        lid = cvnet.getLayerId(name)
        for i, b in enumerate(blobs):
            got = np.asarray(cvnet.getParam(lid, i), np.float32).reshape(b.shape)
            assert np.array_equal(got.view(np.uint32), b.view(np.uint32)), (name, i)
