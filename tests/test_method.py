"""The method's promises on real Caffe: a budget's rate is the file's, whatever layers it leaves dense."""
import json
import os

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from caffe_dc.algorithms.schedule import builtin  # noqa: E402
from caffe_dc.base.blobs import CODEBOOK, blob_name  # noqa: E402
from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.pycaffe import datasets  # noqa: E402
from conftest import run_cli  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")

RATE = 30.0


@pytest.fixture(scope="module")
def dense_layer_run(tmp_path_factory):
    """The quick preset with a 30x budget shared out by least summed drop: on the quick reference it keeps
    ip3 (1,000 weights, the steepest curve) dense and prunes ip1 and ip2 the harder."""
    root = tmp_path_factory.mktemp("dense_layer")
    with open(builtin("lenet-300-100", "quick")) as f:
        doc = json.load(f)
    del doc["densities"]
    doc["budget"] = {"target_rate": RATE, "allocation": "least_drop"}
    sched = root / "schedule.json"
    sched.write_text(json.dumps(doc))
    out = root / "run"
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--schedule", sched, "--out", out,
                "--data-root", root / "data", cwd=str(root))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out


def test_a_layer_the_budget_leaves_dense_is_quantized_and_the_rate_is_met(dense_layer_run):
    out = dense_layer_run
    state = json.load(open(str(out / "pipeline.json")))
    dense = [n for n, d in state["choose"]["final"].items() if d >= 1.0]
    assert dense, "the budget left no layer dense: the test no longer tests what it claims (%s)" % state["choose"]
    m = json.load(open(str(out / "metrics.json")))
    assert abs(m["compression"] / RATE - 1) <= 0.03, m["compression"]
    q = caffemodel.load_params(state["quantize"]["caffemodel"])
    decoded = caffemodel.load_params(state["decode"]["caffemodel"])
    storage = {r["name"]: r for r in json.load(open(str(out / "storage.json")))["layers"] if r["blob"] == 0}
    for n in dense:
        bits = state["quantize"]["bits"][n]
        assert bits == state["choose"]["schedule"]["bits"][n]   # at the bits the budget counted it with
        assert blob_name(n, CODEBOOK) in q
        assert storage[n]["kind"] == "quantized" and storage[n]["weight_bits"] == bits
        w = decoded[n].blobs[0]
        assert np.count_nonzero(w) == w.size and np.unique(w).size <= 2 ** bits
