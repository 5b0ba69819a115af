"""base.provenance: the record of where a result came from."""
from __future__ import annotations

import os
import subprocess
import sys

from caffe_dc.base import provenance
from caffe_dc.stages import reference


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
