"""The ImageNet pipeline wired end to end on a tiny stand-in.

The real AlexNet / VGG-16 prototxts, with small synthetic LMDBs made here
(a few random 3-channel images), a smaller crop so the CPU can run them,
and batches of 2: enough to prove that every stage runs a step on these
nets. The accuracy numbers mean nothing; the wiring does.
"""
import json

import numpy as np
import pytest

caffe = pytest.importorskip("caffe")

from caffe_dc.pycaffe import caffemodel  # noqa: E402
from caffe_dc.pycaffe import datasets  # noqa: E402
from caffe_dc.pycaffe import nets  # noqa: E402
from caffe_dc.pycaffe import solving  # noqa: E402
from conftest import assert_clean_error, run_cli  # noqa: E402

CROPS = {"alexnet": 67, "vgg16": 32}


def write_rgb_lmdb(path, n, size, seed):
    import lmdb

    pb = caffemodel.caffe_pb2()
    rs = np.random.RandomState(seed)
    env = lmdb.open(path, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(n):
            d = pb.Datum(channels=3, height=size, width=size, label=int(rs.randint(0, 1000)))
            d.data = rs.randint(0, 256, size=(3, size, size)).astype(np.uint8).tobytes()
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_reproduce_imagenet_tiny(tmp_path, net):
    crop = CROPS[net]
    train, val = str(tmp_path / "train_lmdb"), str(tmp_path / "val_lmdb")
    write_rgb_lmdb(train, 6, crop + 5, 0)
    write_rgb_lmdb(val, 4, crop + 5, 1)
    info = datasets.imagenet(train, val, batch=2, test_batch=2, crop=crop)
    tv = str(tmp_path / "tv.prototxt")
    caffemodel.save_net_proto(nets.for_data(net, info), tv)
    ref = str(tmp_path / "ref.caffemodel")
    solving.import_caffe()
    caffe.Net(tv, caffe.TEST).save(ref)  # the prototxt's own fillers stand in for trained weights

    out = tmp_path / "run"
    p = run_cli("reproduce", net, "--imagenet-train", train, "--imagenet-val", val, "--weights", ref,
                "--rounds", 1, "--prune-iters", 1, "--quant-iters", 1, "--batch", 2, "--test-batch", 2,
                "--crop", crop, "--out", out, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    state = json.load(open(str(out / "pipeline.json")))
    assert all(state[s]["done"] for s in ("reference", "prune", "quantize", "encode", "decode", "caffe_test", "report"))
    assert state["decode"]["bit_exact"]
    dec = state["caffe_test"]["decoded"]
    assert "accuracy_top5" in dec and dec["accuracy"] == state["caffe_test"]["quantized"]["accuracy"]
    # pruned to the paper's per-layer densities (Table 4 / 5)
    from caffe_dc.base import paper

    storage = json.load(open(str(out / "storage.json")))
    dens = {l["name"]: l["density"] for l in storage["layers"] if l["kind"] == "quantized"}
    for layer, d in paper.PAPER_DENSITY[net].items():
        assert abs(dens[layer] - d) < 0.01, (layer, dens[layer], d)
    assert "skipped (--dense-control" in p.stdout and "control" not in state  # only when asked for
    report = open(str(out / "report.md")).read()
    assert "dense control" not in report
    assert "top-5 error ref → compressed" in report and "Table %d" % paper.TABLE_NUMBER[net] in report


def test_reproduce_imagenet_needs_data(tmp_path):
    assert_clean_error(run_cli("reproduce", "alexnet", "--out", tmp_path / "r"), "--imagenet-train")
