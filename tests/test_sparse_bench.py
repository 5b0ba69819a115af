"""Dense vs CSR benchmark (pipeline.sparse_bench, report.sparse_bench) on tiny layers: correctness and report fields, no timings."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from caffe_dc.base import paper
from caffe_dc.pipeline import sparse_bench
from caffe_dc.pipeline import storage
from caffe_dc.report import sparse_bench as sparse_report
from caffe_dc.base.errors import InputError

from conftest import assert_clean_error, run_cli

FAST = dict(min_seconds=0.0, min_repeats=1)


def _sparse(shape, density, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0
    return w


def test_dense_and_csr_products_agree():
    from scipy import sparse

    w = _sparse((70, 130), 0.1, 0)
    a = sparse.csr_matrix(w)
    rng = np.random.default_rng(1)
    for x in (rng.random(130, dtype=np.float32), rng.random((130, 64), dtype=np.float32)):
        yd, ys = w @ x, a @ x
        assert ys.dtype == np.float32 and ys.shape == yd.shape
        np.testing.assert_allclose(ys, yd, rtol=1e-5, atol=1e-5)
    row = sparse_bench.bench_case(sparse_bench.Case("alexnet", "fc7", w, "t"), 1, rng, warmup=1, min_repeats=2,
                                  min_seconds=0)
    assert row["agree"] and row["max_rel_diff"] < 1e-5
    assert row["nnz"] == int(np.count_nonzero(w)) and row["density"] == pytest.approx(row["nnz"] / w.size)


def test_paper_rows_are_table8():
    b1 = [sparse_bench.paper_row(n, l, 1)["speedup"] for n in (paper.ALEXNET, paper.VGG16) for l in ("fc6", "fc7", "fc8")]
    assert [round(s, 2) for s in b1] == [2.45, 4.83, 1.27, 9.28, 9.86, 1.00]
    r = sparse_bench.paper_row(paper.VGG16, "fc6", 64)
    assert (r["dense_us"], r["sparse_us"]) == (1056.0, 1780.3)
    assert sparse_bench.paper_row(paper.ALEXNET, "fc6", 8) is None
    assert sparse_bench.paper_row("lenet-5", "ip1", 1) is None


@pytest.fixture(scope="module")
def result():
    cases = [sparse_bench.Case("alexnet", "fc6", _sparse((40, 90), 0.09, 2), "synthetic weights"),
             sparse_bench.Case("vgg16", "fc8", _sparse((25, 60), 0.23, 3), "synthetic weights"),
             sparse_bench.Case("mine", "ip1", _sparse((10, 20), 0.5, 4), "other")]
    lines = []
    return sparse_bench.run_bench(cases, (1, 64), threads=1, log=lines.append, **FAST), lines


def test_result_fields(result):
    res, lines = result
    rows = res["rows"]
    assert [(r["net"], r["layer"], r["batch"]) for r in rows] == [
        ("alexnet", "fc6", 1), ("alexnet", "fc6", 64), ("vgg16", "fc8", 1), ("vgg16", "fc8", 64),
        ("mine", "ip1", 1), ("mine", "ip1", 64)]
    for r in rows:
        assert r["agree"]
        assert r["dense_us"] > 0 and r["sparse_us"] > 0
        assert r["speedup"] == pytest.approx(r["dense_us"] / r["sparse_us"])
        assert min(r["repeats"]) >= 1
    assert rows[0]["paper"]["speedup"] == pytest.approx(7516.2 / 3066.5)
    assert rows[3]["paper"]["dense_us"] == 45.7 and rows[4]["paper"] is None
    assert set(res["geomean_speedup"]) == {"1", "64"}
    assert res["paper_geomean_speedup"]["1"] == pytest.approx((7516.2 / 3066.5 * 774.2 / 777.3) ** 0.5)
    blas = res["blas"]
    assert blas["requested_threads"] == 1 and "numpy_build_blas" in blas
    if blas.get("libraries"):          # threadpoolctl present: the limit is what ran
        assert all(l["num_threads"] == 1 for l in blas["libraries"])
    assert {"cpu", "cpus", "numpy", "scipy"} <= set(res["environment"])
    assert len(lines) == 1 + len(rows) and "speedup" in lines[1]


def test_table_and_files(result, tmp_path):
    res, _ = result
    text = sparse_report.text_report(res)
    for h in ("dense µs", "sparse µs", "speedup", "paper speedup", "geomean", "Core i7-5930K"):
        assert h in text
    assert "2.45" in text                       # AlexNet fc6's paper speedup beside ours
    paths = sparse_report.write_outputs(res, str(tmp_path / "b"), "cmd")
    doc = json.loads(open(paths["json"]).read())
    assert doc["command"] == "cmd" and len(doc["rows"]) == 6 and doc["rows"][4]["paper"] is None
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(paths["markdown"]).read()
    assert "bench_sparse.png" in md and "| alexnet | fc6 |" in md


def test_cases_from_a_storage_blob(tmp_path):
    r = storage.run_storage("vgg16", shrink=16, only=["fc6", "fc7", "fc8"], log=lambda s: None)
    path = tmp_path / "v.dcz"
    path.write_bytes(r.blob)
    cases = sparse_bench.cases_from_blob(str(path))
    assert [(c.net, c.layer) for c in cases] == [("vgg16", "fc6"), ("vgg16", "fc7"), ("vgg16", "fc8")]
    assert all("synthetic weights" in c.source for c in cases)
    for c in cases:
        assert c.weights.dtype == np.float32 and c.weights.flags.c_contiguous
        assert np.array_equal(c.weights, r.decoded[c.layer].blobs[0])
        assert np.count_nonzero(c.weights) == round(paper.PAPER_DENSITY["vgg16"][c.layer] * c.weights.size)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError):
        sparse_bench.run_bench([], (1,))
    case = sparse_bench.Case("x", "fc", _sparse((4, 4), 0.5, 0), "t")
    with pytest.raises(InputError):
        sparse_bench.run_bench([case], (0,), **FAST)
    with pytest.raises(InputError):
        sparse_bench.run_bench([case], (1,), threads=0, **FAST)
    assert_clean_error(run_cli("bench-sparse", "--blob", tmp_path / "none.dcz"), "no such compressed blob")
    junk = tmp_path / "junk.dcz"
    junk.write_bytes(b"not a blob")
    assert_clean_error(run_cli("bench-sparse", "--blob", junk), "bad magic")
    assert_clean_error(run_cli("bench-sparse", "--batches", "1,x"), "--batches")


def test_cli_bench_sparse_on_a_blob(tmp_path):
    r = storage.run_storage("alexnet", shrink=16, only=["fc6", "fc7", "fc8"], log=lambda s: None)
    blob = tmp_path / "a.dcz"
    blob.write_bytes(r.blob)
    out = tmp_path / "bench"
    proc = run_cli("bench-sparse", "--blob", blob, "--batches", "1,4", "--min-time", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "paper speedup" in proc.stdout and "alexnet" in proc.stdout
    assert {"bench_sparse.json", "bench_sparse.md", "bench_sparse.png"} <= set(os.listdir(out))
    doc = json.loads((out / "bench_sparse.json").read_text())
    assert doc["batches"] == [1, 4] and len(doc["rows"]) == 6
    assert doc["rows"][1]["paper"] is None          # batch 4 is not in Table 8


def _record(kind, shape):
    """A one-layer blob holding an InnerProduct weight of ``shape`` as record ``kind`` (issue 30)."""
    from caffe_dc.codec import container

    rng = np.random.default_rng(7)
    codes = (rng.integers(0, 4, size=shape) * (rng.random(shape) < 0.5)).astype(np.int64)
    book = np.array([0.0, 0.5, -0.25, 1.5], np.float32)
    if kind == "quantized":
        blob = container.QuantizedBlob("ip1", "InnerProduct", 0, book, codes, 2, None)
    else:
        blob = container.RawBlob("ip1", "InnerProduct", 0, book[codes], quantized=kind == "quantized-raw")
    data, _ = container.write("tiny", [blob, container.RawBlob("ip1", "InnerProduct", 1, np.ones(3, np.float32))])
    return data, book[codes]


@pytest.mark.parametrize("kind", ["quantized", "raw", "quantized-raw"])
@pytest.mark.parametrize("shape", [(), (1,), (5,), (3, 4), (2, 3, 2, 2)], ids=lambda s: "x".join(map(str, s)) or "scalar")
def test_every_record_that_decode_accepts_is_benchmarked(tmp_path, kind, shape):
    """A scalar raw blob died with an IndexError (issue 30): every kind and rank decode reads is timed, as
    the (outputs, inputs) matrix Caffe reads the weights as."""
    from caffe_dc.codec import frontend

    data, weights = _record(kind, shape)
    path = tmp_path / "r.dcz"
    path.write_bytes(data)
    params, _, _ = frontend.decode_bytes(data)
    assert np.array_equal(params["ip1"].blobs[0], weights)
    (case,) = sparse_bench.cases_from_blob(str(path))
    assert case.weights.ndim == 2 and case.weights.shape[0] == (shape[0] if shape else 1)
    assert np.array_equal(case.weights.ravel(), weights.ravel())
    res = sparse_bench.run_bench([case], (1, 2), threads=1, log=lambda s: None, **FAST)
    assert [r["agree"] for r in res["rows"]] == [True, True]


def test_cli_bench_sparse_on_a_scalar_raw_blob(tmp_path):
    data, _ = _record("raw", ())
    blob = tmp_path / "s.dcz"
    blob.write_bytes(data)
    assert run_cli("decode", blob, "-o", tmp_path / "s.caffemodel").returncode == 0
    proc = run_cli("bench-sparse", "--blob", blob, "--batches", "1", "--min-time", "0", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "b" / "bench_sparse.json").read_text())["rows"][0]["shape"] == [1, 1]
