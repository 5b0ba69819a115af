import os
import subprocess
import sys

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the image has hypothesis
    pass
else:
    # CI runs on machines of unknown load: no wall-clock limits, and the same examples every run,
    # so a red run is a bug that reproduces, not a slow moment.
    settings.register_profile("caffe-dc", deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "caffe-dc"))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionstart(session):
    """Where Caffe must be there (the image sets CAFFE_DC_REQUIRE_CAFFE=1), a pycaffe that does not
    import fails the run: otherwise every Caffe test would skip and the run would look green.

    First, on a CPU that cannot run the image's pinned OpenBLAS kernels, stop with the reason (and
    the override) instead of dying on an illegal instruction in whichever test first multiplies."""
    from caffe_dc.base import provenance

    refusal = provenance.check_pin()
    if refusal:
        pytest.exit("caffe-dc tests: " + refusal, returncode=2)
    if os.environ.get("CAFFE_DC_REQUIRE_CAFFE", "") not in ("", "0"):
        try:
            import caffe  # noqa: F401
        except Exception as e:  # an ImportError, or a broken shared library raising something else
            pytest.exit("CAFFE_DC_REQUIRE_CAFFE is set but `import caffe` fails (%s: %s); the tests that need "
                        "Caffe would all be skipped" % (type(e).__name__, e), returncode=3)


# What a test needs and may skip without, unless the run says it is there: in the image (CAFFE_DC_REQUIRE_CAFFE)
# everything is; CI's Caffe-free part names what it installed (CAFFE_DC_REQUIRE=cv2,protobuf,fashion-mnist).
NEEDS = ("cv2", "protobuf", "fashion-mnist")


def required(what: str) -> bool:
    if os.environ.get("CAFFE_DC_REQUIRE_CAFFE", "") not in ("", "0"):
        return True
    return what in os.environ.get("CAFFE_DC_REQUIRE", "").split(",")


def need(what: str, present: bool, why: str = "") -> None:
    """Skip the test without ``what`` (one of ``NEEDS``), or fail it where the run says ``what`` is there."""
    assert what in NEEDS, what
    if not present:
        if required(what):
            pytest.fail("%s is missing, but this run requires it%s" % (what, ": " + why if why else ""), pytrace=False)
        pytest.skip("needs %s%s" % (what, ": " + why if why else ""), allow_module_level=True)


def need_module(module: str, what: str):
    """``pytest.importorskip``, under ``need``'s rule."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        need(what, False, str(e))


def cli_argv(*args, caffe: bool = True):
    """(argv, env) that run `caffe-dc ARGS`: the installed entry point named by CAFFE_DC_CLI (CI's Caffe-free
    part: the wheel's own ``caffe-dc``, so a packaging fault fails), else this checkout; ``caffe=False``
    hides pycaffe from the checkout's child (the wheel's venv has none)."""
    env = dict(os.environ)
    if os.environ.get("CAFFE_DC_CLI"):
        env.pop("PYTHONPATH", None)
        return [os.environ["CAFFE_DC_CLI"], *map(str, args)], env
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if caffe:
        return [sys.executable, "-m", "caffe_dc", *map(str, args)], env
    code = "import sys; sys.modules['caffe'] = None; from caffe_dc.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *map(str, args)], env


def run_cli(*args, cwd=None, timeout=600, caffe=True):
    """Run `caffe-dc ARGS` as a user would; returns CompletedProcess with text output."""
    argv, env = cli_argv(*args, caffe=caffe)
    return subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, env=env)


def quick_run_with(root, doc, name="run", data="fashion-mnist"):
    """`reproduce lenet-300-100 --quick --data DATA` under the schedule ``doc`` (written beside the run), data in
    root/data; (schedule path, run folder, process), the run checked to have succeeded."""
    import json

    sched = root / ("%s.json" % name)
    sched.write_text(json.dumps(doc))
    out = root / name
    p = run_cli("reproduce", "lenet-300-100", "--quick", "--schedule", sched, "--out", out, "--data", data,
                "--data-root", root / "data", cwd=str(root))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return sched, out, p


def killed_in_chunk(monkeypatch, n):
    """Make ``solving.run`` (one piece of training between snapshots) raise on its n-th call, as a
    kill would stop a run; returns the list of calls made, which keeps counting after the kill."""
    from caffe_dc.pycaffe import solving

    real_run, calls = solving.run, []

    def run(*a, **k):
        calls.append(k.get("desc"))
        if len(calls) == n:
            raise KeyboardInterrupt
        return real_run(*a, **k)

    monkeypatch.setattr(solving, "run", run)
    return calls


def assert_clean_error(proc, *fragments):
    """A user error: non-zero exit, a one-line message, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def cli():
    return run_cli
