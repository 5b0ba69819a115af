"""How ``caffe_dc.cli.main`` reports the two kinds of failure, and the OpenBLAS pin refusal.

Bad input (a DCError such as InputError) is the user's to fix: one line,
exit status 2. A broken invariant (InternalError) is ours: one line saying
it is a bug, then the traceback for the report, exit status 1.
"""
import numpy as np
import pytest

from caffe_dc import cli
from caffe_dc.base import provenance
from caffe_dc.base.errors import InternalError
from caffe_dc.codec import container
from caffe_dc.codec import frontend


def _lines(text):
    return [l for l in text.splitlines() if l.strip()]


@pytest.fixture
def blob(tmp_path):
    data, _ = container.write("tiny", [container.RawBlob("ip1", "InnerProduct", 0, np.ones((2, 3), np.float32))])
    path = tmp_path / "T.dcz"
    path.write_bytes(data)
    return str(path)


def test_input_error_is_one_line_and_status_2(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "missing.dcz")]) == 2
    err = _lines(capsys.readouterr().err)
    assert err == ["caffe-dc inspect: error: no such compressed blob: %s" % (tmp_path / "missing.dcz")]


def test_internal_error_says_bug_then_the_details_and_status_1(blob, capsys, monkeypatch):
    def broken(data, max_weights=None):
        raise InternalError("decoded codes exceed\nthe codebook")

    monkeypatch.setattr(frontend, "decode_bytes", broken)
    assert cli.main(["inspect", blob]) == 1
    err = _lines(capsys.readouterr().err)
    assert err[0] == ("caffe-dc inspect: internal error: decoded codes exceed the codebook (this is a bug in "
                      "caffe-dc; please report it with the details below)")
    assert err[1] == "Traceback (most recent call last):"
    assert err[-2:] == ["caffe_dc.base.errors.InternalError: decoded codes exceed", "the codebook"]
    assert any("in broken" in l for l in err)


def test_bench_sparse_on_a_blob_without_weights_is_bad_input(tmp_path, capsys):
    data, _ = container.write("tiny", [container.RawBlob("ip1", "InnerProduct", 0, np.zeros((0, 8), np.float32))])
    (tmp_path / "E.dcz").write_bytes(data)
    assert cli.main(["bench-sparse", "--blob", str(tmp_path / "E.dcz"), "--out", str(tmp_path / "bs")]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "holds no weights" in err[0] and "'ip1'" in err[0], err
    assert not (tmp_path / "bs").exists()


def test_a_cpu_without_avx2_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    monkeypatch.setattr(provenance, "CPUINFO", str(cpuinfo))
    monkeypatch.setenv("CAFFE_DC_BLAS_PIN", "Haswell")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    # --batches 0 is refused too, but later, when the command runs: the pin must stop it first
    assert cli.main(["bench-sparse", "--batches", "0"]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("caffe-dc bench-sparse: error: this CPU lacks AVX2"), err
    assert "OPENBLAS_CORETYPE=" in err[0]
    # a command without BLAS work still runs (and fails on its own input here)
    assert cli.main(["inspect", str(tmp_path / "missing.dcz")]) == 2
    assert "no such compressed blob" in capsys.readouterr().err
    # the override is the user's choice: not refused (stopped here by a bad option instead)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Sandybridge")
    assert cli.main(["bench-sparse", "--batches", "0"]) == 2
    assert "--batches" in capsys.readouterr().err
