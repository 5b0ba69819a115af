"""The image's pinned OpenBLAS kernel family is the one that runs once Caffe is loaded (issue 21).

OpenBLAS picks its kernels per CPU at run time and another family gives
other trained weights, so the image pins it (OPENBLAS_CORETYPE=Haswell,
named in CAFFE_DC_BLAS_PIN). These tests ask OpenBLAS itself which kernels
it runs, in a fresh process that has loaded numpy and Caffe, with the pin
and with an override. Outside the image they skip.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

PIN = os.environ.get("CAFFE_DC_BLAS_PIN")

pytestmark = pytest.mark.skipif(not PIN, reason="outside the image: no pinned OpenBLAS kernel "
                                                "(CAFFE_DC_BLAS_PIN is unset)")

PROBE = r"""
import ctypes, json, numpy as np
from caffe_dc.pycaffe import solving
caffe = solving.import_caffe()
from caffe_dc.base import provenance
a = np.ones((64, 64), np.float32)
a @ a                                       # the kernels run, not only load
every = {}
for path in provenance.loaded_blas():       # Caffe's libblas.so.3, numpy's, scipy's: all must say the same
    f = getattr(ctypes.CDLL(path), "openblas_get_corename", None)
    if f is not None:
        f.restype = ctypes.c_char_p
        every[path] = f().decode()
env = provenance.environment([])
print(json.dumps({"env": env, "kernel": provenance.openblas_kernel(), "note": provenance.blas_note(env),
                  "every": every, "libcaffe": any("libcaffe" in l for l in open("/proc/self/maps"))}))
"""


def _probe(**env):
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    p = subprocess.run([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, env=e, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_pinned_kernel_runs_when_caffe_is_loaded():
    pytest.importorskip("caffe", reason="needs pycaffe")
    assert os.environ.get("OPENBLAS_CORETYPE") == PIN, "the image sets the pin and OPENBLAS_CORETYPE together"
    r = _probe()
    env, kernel = r["env"], r["kernel"]
    assert kernel["kernel"] == PIN == "Haswell", kernel
    assert PIN in kernel["config"] and "DYNAMIC_ARCH" in kernel["config"]
    assert os.path.basename(kernel["library"]).startswith("libopenblas"), kernel
    assert r["libcaffe"] and set(r["every"].values()) == {"Haswell"}, r["every"]
    assert env["caffe"], "the record names the Caffe version"
    assert (env["blas_kernel"], env["blas_pin"], env["blas_coretype"]) == ("Haswell", "Haswell", "Haswell")
    assert r["note"] == "OpenBLAS kernel Haswell (pinned)"


def test_an_override_is_the_kernel_that_runs_and_the_note_says_so():
    pytest.importorskip("caffe", reason="needs pycaffe")
    with open("/proc/cpuinfo") as f:
        if "avx" not in f.read().split():
            pytest.skip("this CPU cannot run Sandybridge kernels either")
    r = _probe(OPENBLAS_CORETYPE="Sandybridge")
    assert r["kernel"]["kernel"] == "Sandybridge"
    assert r["note"] == ("OpenBLAS kernel Sandybridge (overridden by OPENBLAS_CORETYPE=Sandybridge: results are "
                         "not byte-comparable with the committed ones)")
