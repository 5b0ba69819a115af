"""base.provenance: the record of where a result came from."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from caffe_dc.base import provenance
from caffe_dc.stages import reference
from conftest import REPO


def _git_head():
    try:
        return subprocess.run(["git", "-C", provenance._CHECKOUT, "rev-parse", "HEAD"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, check=True).stdout.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def test_environment_fields_and_argv(monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", None)        # as on a machine without pycaffe
    env = provenance.environment(["caffe-dc", "storage", "alexnet", "--out", "a b"])
    assert env["argv"] == "caffe-dc storage alexnet --out 'a b'"
    assert env["caffe"] is None
    import numpy as np
    assert env["numpy"] == np.__version__ and env["cpus"] == os.cpu_count()
    assert env["python"].count(".") == 2 and env["cpu"] and env["blas"]
    assert {"git_commit", "git_dirty", "scikit-learn", "protobuf", "platform", "blas_threads"} <= set(env)
    head = _git_head()
    if head is not None:                                    # run from a checkout
        assert env["git_commit"] == head and isinstance(env["git_dirty"], bool)


def test_commit_outside_a_checkout_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "_CHECKOUT", str(tmp_path))
    monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
    assert provenance.git_state() == (None, None)
    monkeypatch.setenv(provenance.COMMIT_ENV, "abc123")
    assert provenance.git_state() == ("abc123", None)


def test_reference_records_the_same_environment(monkeypatch):
    monkeypatch.setattr(provenance, "environment", lambda argv=None: {"from": "provenance"})
    assert reference.environment(object()) == {"from": "provenance"}


# ============================================================================ library versions

def test_caffe_version_comes_from_the_pycaffe_probe(monkeypatch):
    from caffe_dc.pycaffe import versions

    assert provenance._PROBES["caffe"] is versions.caffe_version
    monkeypatch.setitem(sys.modules, "caffe", None)
    assert versions.caffe_version() is None
    monkeypatch.setitem(sys.modules, "caffe", type(sys)("caffe"))
    sys.modules["caffe"].__version__ = "1.0.0"
    assert provenance.environment([])["caffe"] == "1.0.0"
    # the caller's word wins, and a probe that breaks records None rather than failing the run
    assert provenance.environment([], versions={"caffe": "given"})["caffe"] == "given"
    monkeypatch.setitem(provenance._PROBES, "broken", lambda: 1 / 0)
    assert provenance.environment([])["broken"] is None


# ============================================================================ OpenBLAS kernel pin

CPU_AVX2 = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx fma avx2\n\nprocessor\t: 1\n"
CPU_AVX = "processor\t: 0\nflags\t\t: fpu sse2 sse4_2 avx\n"
PINNED = {"CAFFE_DC_BLAS_PIN": "Haswell", "OPENBLAS_CORETYPE": "Haswell"}


def test_pin_refused_only_where_the_cpu_lacks_avx2_and_the_pin_is_in_force():
    msg = provenance.pin_refusal(CPU_AVX, PINNED)
    assert "AVX2" in msg and "OPENBLAS_CORETYPE=Haswell" in msg and "OPENBLAS_CORETYPE=Sandybridge" in msg
    assert "\n" not in msg
    assert provenance.pin_refusal(CPU_AVX2, PINNED) is None
    assert provenance.pin_refusal(CPU_AVX, dict(PINNED, OPENBLAS_CORETYPE="haswell")) is not None
    # overridden, unset, or no pin at all: the user's choice (or no image), nothing to refuse
    assert provenance.pin_refusal(CPU_AVX, dict(PINNED, OPENBLAS_CORETYPE="Sandybridge")) is None
    assert provenance.pin_refusal(CPU_AVX, {"CAFFE_DC_BLAS_PIN": "Haswell"}) is None
    assert provenance.pin_refusal(CPU_AVX, {"OPENBLAS_CORETYPE": "Haswell"}) is None
    # no flags line (not x86, or an unreadable cpuinfo): no evidence, no refusal
    assert provenance.pin_refusal("processor\t: 0\nisa\t: rv64imafdc\n", PINNED) is None


def test_pin_state():
    assert provenance.pin_state(PINNED) == ("Haswell", "Haswell", True)
    assert provenance.pin_state(dict(PINNED, OPENBLAS_CORETYPE="Zen")) == ("Haswell", "Zen", False)
    assert provenance.pin_state({"CAFFE_DC_BLAS_PIN": "Haswell", "OPENBLAS_CORETYPE": ""}) == ("Haswell", None, False)
    assert provenance.pin_state({}) == (None, None, None)


def test_blas_note_wording():
    env = {"blas_kernel": "Haswell", "blas_pin": "Haswell", "blas_coretype": "Haswell"}
    assert provenance.blas_note(env) == "OpenBLAS kernel Haswell (pinned)"
    over = provenance.blas_note(dict(env, blas_kernel="Sandybridge", blas_coretype="Sandybridge"))
    assert over == ("OpenBLAS kernel Sandybridge (overridden by OPENBLAS_CORETYPE=Sandybridge: results are not "
                    "byte-comparable with the committed ones)")
    unset = provenance.blas_note(dict(env, blas_kernel="Zen", blas_coretype=None))
    assert unset.startswith("OpenBLAS kernel Zen (the pin Haswell was not in force") and "not byte-comparable" in unset
    free = provenance.blas_note({"blas_kernel": "SkylakeX", "blas_pin": None, "blas_coretype": None})
    assert free == "OpenBLAS kernel SkylakeX (chosen by OpenBLAS for this CPU; not the image's pin)"
    assert provenance.blas_note({}).startswith("OpenBLAS kernel not recorded")


def test_the_kernel_in_the_record_is_the_one_openblas_reports():
    """Against OpenBLAS's own word: with OPENBLAS_VERBOSE=2 it prints the core it chose when it loads
    ("Core: Haswell"), which a child compares with what the run record says."""
    code = ("import numpy, json; from caffe_dc.base import provenance; e = provenance.environment([]); "
            "print(json.dumps([e['blas_kernel'], e['blas_config'], provenance.openblas_kernel()['library']]))")
    env = dict(os.environ, OPENBLAS_VERBOSE="2", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    kernel, config, library = json.loads(p.stdout.strip().splitlines()[-1])
    said = re.findall(r"^Core: (\S+)", p.stdout + p.stderr, flags=re.M)
    if not said:                    # a BLAS that is not OpenBLAS, or one built for a single core: nothing to ask
        assert kernel is None or "DYNAMIC_ARCH" not in (config or "")
        return
    assert kernel == said[0] and kernel in config and library
    record = provenance.environment([])
    assert record["blas_pin"] == (os.environ.get("CAFFE_DC_BLAS_PIN") or None)
    assert record["blas_coretype"] == (os.environ.get("OPENBLAS_CORETYPE") or None)
