"""Where a result came from: the code's commit, the machine, the libraries, the command.

Every run record (reference training, run reports, benchmarks) stores
``environment()``, so a number can be traced back to the code and the
setup that produced it. Nothing here may fail a run: whatever cannot be
found is None.

Versions that only a higher layer can find (Caffe's: base never imports
pycaffe) come from probes that layer registers (``register_version``;
``caffe_dc.pycaffe.versions`` registers Caffe's) or from the caller.

The OpenBLAS kernel family changes trained weights, so the image pins it
(``OPENBLAS_CORETYPE``, named again in ``CAFFE_DC_BLAS_PIN``). The record
holds the kernel OpenBLAS reports in use (``openblas_kernel``) and whether
the pin is in force; ``blas_note`` words it for a report, and
``pin_refusal`` tells a CPU that cannot run the pinned kernels.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import io
import os
import platform
import shlex
import subprocess
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

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


def _version(load: Callable[[], object]) -> Optional[str]:
    """``__version__`` of the module ``load()`` returns; None if it does not import."""
    try:
        m = load()
    except Exception:   # a broken optional library must not fail the run that records it
        return None
    return getattr(m, "__version__", None)


_PROBES: Dict[str, Callable[[], Optional[str]]] = {}


def register_version(name: str, probe: Callable[[], Optional[str]]) -> None:
    """Have ``environment()`` record ``name: probe()`` (a higher layer's library, e.g. Caffe)."""
    _PROBES[name] = probe


# ============================================================================ OpenBLAS kernel

PIN_ENV = "CAFFE_DC_BLAS_PIN"        # the image's pinned kernel family, set beside OPENBLAS_CORETYPE
CORETYPE_ENV = "OPENBLAS_CORETYPE"   # OpenBLAS's own choice of kernel family (DYNAMIC_ARCH builds)
# /proc/cpuinfo flags each pinnable family needs; a CPU without them dies on an illegal instruction.
KERNEL_FLAGS = {"haswell": ("avx2",), "skylakex": ("avx512f",), "sandybridge": ("avx",)}


def openblas_kernel() -> Dict[str, Optional[str]]:
    """``openblas_get_corename()`` and ``openblas_get_config()`` of the OpenBLAS mapped into this process.

    Asks the library already loaded (numpy's and Caffe's BLAS, found in
    /proc/self/maps) rather than loading one: a library loaded only to be
    asked would not be the one that ran. All None without OpenBLAS.
    """
    out = {"kernel": None, "config": None, "library": None}
    # libopenblas*.so first: Debian's libblas.so.3 is the same library under its alternatives name.
    for path in sorted(loaded_blas(), key=lambda p: not os.path.basename(p).startswith("libopenblas")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        # numpy's wheels bundle OpenBLAS with its symbols renamed (scipy-openblas, 64-bit integers).
        for prefix, suffix in (("", ""), ("scipy_", "64_"), ("scipy_", "")):
            core = getattr(lib, "%sopenblas_get_corename%s" % (prefix, suffix), None)
            config = getattr(lib, "%sopenblas_get_config%s" % (prefix, suffix), None)
            if core is not None and config is not None:
                break
        else:
            continue
        core.restype = config.restype = ctypes.c_char_p
        core.argtypes = config.argtypes = []
        out.update(kernel=(core() or b"").decode("ascii", "replace") or None,
                   config=(config() or b"").decode("ascii", "replace") or None, library=path)
        break
    return out


def pin_state(environ: Optional[Mapping[str, str]] = None) -> Tuple[Optional[str], Optional[str], Optional[bool]]:
    """(pin, OPENBLAS_CORETYPE, pin in force): in force is None where nothing is pinned (outside the image)."""
    env = os.environ if environ is None else environ
    pin = env.get(PIN_ENV) or None
    core = env.get(CORETYPE_ENV) or None
    if pin is None:
        return None, core, None
    return pin, core, core is not None and core.lower() == pin.lower()


def cpu_flags(cpuinfo: str) -> Optional[set]:
    """The ``flags`` of the first CPU in /proc/cpuinfo text; None if there is none (not x86, or unreadable)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def pin_refusal(cpuinfo: str, environ: Mapping[str, str]) -> Optional[str]:
    """Why this CPU cannot run the pinned OpenBLAS kernels (one line), or None when it can or nothing is pinned.

    Only a pin in force is refused: with OPENBLAS_CORETYPE overridden, the
    user has chosen other kernels (and results that are not byte-comparable).
    """
    pin, _, in_force = pin_state(environ)
    flags = cpu_flags(cpuinfo)
    if not in_force or flags is None:
        return None
    missing = [f for f in KERNEL_FLAGS.get(pin.lower(), ()) if f not in flags]
    if not missing:
        return None
    return ("this CPU lacks %s, which the image's pinned OpenBLAS kernels (%s=%s) need; override the pin "
            "with e.g. %s=Sandybridge (results will not be byte-comparable with the committed ones)"
            % (", ".join(f.upper() for f in missing), CORETYPE_ENV, pin, CORETYPE_ENV))


CPUINFO = "/proc/cpuinfo"


def check_pin() -> Optional[str]:
    """``pin_refusal`` for this machine (``CPUINFO``) and this process's environment."""
    try:
        with open(CPUINFO) as f:
            cpuinfo = f.read()
    except OSError:
        return None
    return pin_refusal(cpuinfo, os.environ)


def blas_note(env: Mapping[str, object]) -> str:
    """The one line a report prints about the BLAS kernels, from an ``environment()`` record."""
    kernel = env.get("blas_kernel")
    pin, core = env.get("blas_pin"), env.get("blas_coretype")
    if not kernel:
        return "OpenBLAS kernel not recorded (no OpenBLAS loaded, or a record older than this field)"
    if not pin:
        how = "%s=%s" % (CORETYPE_ENV, core) if core else "chosen by OpenBLAS for this CPU"
        return "OpenBLAS kernel %s (%s; not the image's pin)" % (kernel, how)
    if core and str(core).lower() == str(pin).lower() and str(kernel).lower() == str(pin).lower():
        return "OpenBLAS kernel %s (pinned)" % kernel
    why = ("overridden by %s=%s" % (CORETYPE_ENV, core) if core and str(core).lower() != str(pin).lower() else
           "the pin %s was not in force" % pin)
    return "OpenBLAS kernel %s (%s: results are not byte-comparable with the committed ones)" % (kernel, why)


def environment(argv: Optional[Sequence[str]] = None, versions: Optional[Mapping[str, Optional[str]]] = None) -> dict:
    """Commit, machine, BLAS and library versions, and the exact command line (``sys.argv`` by default).

    ``versions`` adds or overrides library versions (e.g. ``{"caffe": ...}``);
    without it, Caffe's comes from the probe ``caffe_dc.pycaffe`` registers
    (None if pycaffe was never imported).
    """
    commit, dirty = git_state()
    numpy_version = _version(lambda: importlib.import_module("numpy"))   # loads the BLAS, so that it can be found
    libs = blas_libraries()
    if libs:
        blas = ", ".join("%s %s" % (l["internal_api"], l["version"]) for l in libs)
        threads = libs[0]["num_threads"]
    else:
        blas, threads = ", ".join(loaded_blas()) or numpy_build_blas(), None
    kernel = openblas_kernel()
    pin, core, _ = pin_state()
    out = {
        "git_commit": commit, "git_dirty": dirty,
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu_model(), "cpus": os.cpu_count(),
        "blas": blas, "blas_threads": threads,
        "blas_kernel": kernel["kernel"], "blas_config": kernel["config"],
        "blas_pin": pin, "blas_coretype": core,
        "numpy": numpy_version, "scikit-learn": _version(lambda: importlib.import_module("sklearn")),
        "protobuf": _version(lambda: importlib.import_module("google.protobuf")), "caffe": None,
        "argv": shlex.join(sys.argv if argv is None else list(argv)),
    }
    for name, probe in _PROBES.items():
        out[name] = _probe(probe)
    out.update(versions or {})
    return out


def _probe(probe: Callable[[], Optional[str]]) -> Optional[str]:
    try:
        return probe()
    except Exception:   # a registered probe must not fail the run that records it either
        return None
