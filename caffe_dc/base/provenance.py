"""Where a result came from: the code's commit, the machine, the libraries, the command.

Every run record (reference training, run reports, benchmarks) stores
``environment()``, so a number can be traced back to the code and the
setup that produced it. Nothing here may fail a run: whatever cannot be
found is None.
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import shlex
import subprocess
import sys
from typing import List, Optional, Sequence, Tuple

# The image has no .git: its build can name the commit it was made from.
COMMIT_ENV = "CAFFE_DC_COMMIT"
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # <checkout>/caffe_dc/base/


def _git(*args: str) -> Optional[str]:
    try:
        p = subprocess.run(["git", "-C", _CHECKOUT] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.decode("utf-8", "replace") if p.returncode == 0 else None


def git_state() -> Tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the checkout this package runs from; (CAFFE_DC_COMMIT, None) or (None, None) outside one.

    An installed package may sit inside some unrelated repository (a
    project's virtualenv), so the repository must be rooted at the
    package's own parent folder.
    """
    top = _git("rev-parse", "--show-toplevel")
    if top is not None and os.path.realpath(top.strip()) == os.path.realpath(_CHECKOUT):
        head = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain")
        if head is not None:
            return head.strip(), None if status is None else bool(status.strip())
    return os.environ.get(COMMIT_ENV) or None, None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def numpy_build_blas() -> str:
    """numpy's build-time BLAS (``blas_opt_info`` libraries): what it linked, not necessarily what runs."""
    import numpy as np

    try:   # numpy >= 1.25 describes its build as a dict
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return "%s %s" % (blas.get("name"), blas.get("version"))
    except (TypeError, KeyError):
        pass
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        np.show_config()
    lines = buf.getvalue().splitlines()
    for i, l in enumerate(lines):
        if l.strip().startswith("blas_opt_info"):
            for m in lines[i + 1:i + 6]:
                if "libraries" in m:
                    return m.split("=", 1)[1].strip()
    return "unknown"


def blas_libraries() -> List[dict]:
    """The BLAS libraries loaded in this process, with their thread counts (threadpoolctl; [] without it)."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "filepath")}
            for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]


def loaded_blas() -> List[str]:
    """Paths of the BLAS shared libraries mapped into this process (Linux), e.g. Debian's alternatives target.

    threadpoolctl does not recognise a BLAS loaded as plain ``libblas.so.3``
    (Debian's numpy), so this is what names it there.
    """
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "blas" in line.rsplit("/", 1)[-1]}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _version(module: str) -> Optional[str]:
    try:
        m = __import__(module, fromlist=["__version__"])
    except Exception:   # a broken optional library must not fail the run that records it
        return None
    return getattr(m, "__version__", None)


def _caffe_version() -> Optional[str]:
    # Imported here, never at module level: base must not need pycaffe. GLOG stays quiet
    # unless the caller already chose a level (solving.import_caffe does).
    if "caffe" not in sys.modules:
        os.environ.setdefault("GLOG_minloglevel", os.environ.get("CAFFE_DC_GLOG", "2"))
    return _version("caffe")


def environment(argv: Optional[Sequence[str]] = None) -> dict:
    """Commit, machine, BLAS and library versions, and the exact command line (``sys.argv`` by default)."""
    commit, dirty = git_state()
    numpy_version = _version("numpy")        # loads the BLAS, so that it can be found
    libs = blas_libraries()
    if libs:
        blas = ", ".join("%s %s" % (l["internal_api"], l["version"]) for l in libs)
        threads = libs[0]["num_threads"]
    else:
        blas, threads = ", ".join(loaded_blas()) or numpy_build_blas(), None
    return {
        "git_commit": commit, "git_dirty": dirty,
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu_model(), "cpus": os.cpu_count(),
        "blas": blas, "blas_threads": threads,
        "numpy": numpy_version, "scikit-learn": _version("sklearn"),
        "protobuf": _version("google.protobuf"), "caffe": _caffe_version(),
        "argv": shlex.join(sys.argv if argv is None else list(argv)),
    }
