"""The launcher ``./dc`` on the host (issue 30): every message of the command reaches the user, an
interrupted launcher stops its command and removes its working container, a folder option that is a
symlink loop says so.

These run ``./dc`` itself, so they need its engine and the built image: they skip without them,
except where ``CAFFE_DC_REQUIRE_LAUNCHER=1`` (CI, after ``./dc test`` built the image) makes that a
failure. ``CAFFE_DC_LAUNCHER_REPEATS`` sets how often a failing command goes through (default 50,
about two seconds each with buildah).
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

DC = os.path.join(REPO, "dc")
REPEATS = int(os.environ.get("CAFFE_DC_LAUNCHER_REPEATS", "50"))


def _env(tmp_path, **extra):
    env = dict(os.environ, CAFFE_DC_NO_BUILD="1", CAFFE_DC_RUNS=str(tmp_path / "runs"))
    env.pop("CAFFE_DC_DATA", None)
    env.update(extra)
    return env


def dc(tmp_path, *args, **kw):
    return subprocess.run([DC, "dev"] + list(args), cwd=str(tmp_path), env=_env(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=kw.get("timeout", 300))


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """``./dc`` that can run a command in the image here (else skip, or fail under CAFFE_DC_REQUIRE_LAUNCHER)."""
    tmp = tmp_path_factory.mktemp("launcher")
    why = None
    if sys.platform != "linux":
        why = "the launcher runs on Linux"
    else:
        try:
            p = dc(tmp, "true", timeout=600)
            if p.returncode != 0:
                why = "./dc dev true: exit %d: %s" % (p.returncode, p.stderr.strip()[-500:])
        except (OSError, subprocess.TimeoutExpired) as e:
            why = "./dc cannot run here: %s" % e
    if why:
        if os.environ.get("CAFFE_DC_REQUIRE_LAUNCHER", "") not in ("", "0"):
            pytest.fail(why)
        pytest.skip(why)
    return tmp


def _engine():
    """The engine ``./dc`` picks (its ``engine()``): the working-container tests are buildah's."""
    if os.environ.get("CAFFE_DC_ENGINE"):
        return os.environ["CAFFE_DC_ENGINE"]
    try:
        docker = subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    except OSError:
        docker = 1
    return "docker" if docker == 0 else "buildah"


buildah_only = pytest.mark.skipif(_engine() != "buildah", reason="docker run --rm removes its own container")


def _containers():
    p = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, universal_newlines=True)
    return p.stdout.split()


def _running(token):
    """Pids of processes whose command line holds ``token`` (this test's own are not among them)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if token.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_a_failing_command_always_shows_its_line(launcher):
    """The issue's silent exits: a message written just before the exit must come through every time."""
    os.makedirs(str(launcher / "runs"), exist_ok=True)
    with open(str(launcher / "runs" / "cut.dcz"), "wb") as f:
        f.write(b"\x93CAFFEDC" + bytes(40))
    failures = []
    for i in range(REPEATS):
        p = dc(launcher, "python3", "-m", "caffe_dc", "decode", "/work/runs/cut.dcz", "-o", "/work/runs/x.caffemodel")
        lines = p.stderr.splitlines()
        if p.returncode != 2 or len(lines) != 1 or not lines[0].startswith("caffe-dc decode: error: "):
            failures.append((i, p.returncode, p.stderr[-300:]))
    assert not failures, failures


def test_long_output_and_a_last_line_on_both_streams(launcher):
    code = ("import sys\nfor i in range(20000): print('line %d' % i)\n"
            "sys.stderr.write('x' * 100000 + '\\nthe last word\\n')\nsys.exit(3)")
    for _ in range(3):
        p = dc(launcher, "python3", "-c", code)
        assert p.returncode == 3
        assert p.stdout.splitlines() == ["line %d" % i for i in range(20000)]
        assert p.stderr.splitlines()[-1] == "the last word" and len(p.stderr) == 100000 + 15


def _process_tree(root: int) -> str:
    """``ps`` lines of ``root`` and every process below it (what a hung launcher is waiting on)."""
    rows = subprocess.run(["ps", "-eo", "pid=,ppid=,stat=,etime=,args="], capture_output=True, text=True).stdout
    procs = [r.split(None, 4) for r in rows.splitlines() if len(r.split(None, 4)) == 5]
    keep, grew = {str(root)}, True
    while grew:
        grew = False
        for pid, ppid, *_ in procs:
            if ppid in keep and pid not in keep:
                keep.add(pid)
                grew = True
    return "\n".join(" ".join(r)[:200] for r in procs if r[0] in keep) or "(none left)"


@buildah_only
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
                         ids=["TERM", "INT", "HUP"])
def test_an_interrupted_launcher_stops_its_command_and_removes_its_container(launcher, sig, status):
    token = "caffe-dc-launcher-test-%d-%d" % (os.getpid(), sig)
    code = "import time; print('started', flush=True); time.sleep(300)  # %s" % token
    # A launcher started under nohup (as a CI script may be) inherits an ignored SIGHUP, which bash can
    # neither trap nor reset: give it the default a terminal's shell has, which is what this test is about.
    p = subprocess.Popen([DC, "dev", "python3", "-c", code], cwd=str(launcher), env=_env(launcher),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    try:
        assert p.stdout.readline().strip() == "started"
        mine = [c for c in _containers() if c.startswith("caffe-dc-run-%d-" % p.pid)]
        assert len(mine) == 1
        t0 = time.time()
        p.send_signal(sig)
        try:
            p.wait(timeout=120)   # buildah tears a container down slowly on a loaded machine
        except subprocess.TimeoutExpired:
            # say where the launcher hangs
            pytest.fail("the launcher did not stop within 120 s of %s; its processes:\n%s"
                        % (sig.name, _process_tree(p.pid)), pytrace=False)
        assert time.time() - t0 < 100   # promptly, not after the 300 s sleep
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == status, p.stderr.read()
    assert mine[0] not in _containers()
    assert _running(token) == []


@buildah_only
def test_a_killed_launchers_container_goes_with_the_next_launcher(launcher):
    token = "caffe-dc-launcher-test-%d-kill" % os.getpid()
    code = "import time; print('started', flush=True); time.sleep(2)  # %s" % token
    p = subprocess.Popen([DC, "dev", "python3", "-c", code], cwd=str(launcher), env=_env(launcher),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    assert p.stdout.readline().strip() == "started"
    mine = [c for c in _containers() if c.startswith("caffe-dc-run-%d-" % p.pid)]
    p.kill()      # SIGKILL: no trap runs; the command goes on, as under `docker run`
    p.wait()
    assert mine and mine[0] in _containers()
    deadline = time.time() + 30
    while _running(token) and time.time() < deadline:
        time.sleep(0.2)
    assert dc(launcher, "true").returncode == 0
    assert mine[0] not in _containers()


@pytest.mark.parametrize("var", ["CAFFE_DC_DATA", "CAFFE_DC_RUNS"])
def test_a_folder_option_that_is_a_symlink_loop_says_so(tmp_path, var):
    loop = tmp_path / "loop"
    os.symlink(str(loop), str(loop))
    p = subprocess.run([DC, "dev", "true"], cwd=str(tmp_path), env=_env(tmp_path, **{var: str(loop)}),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.splitlines() == ["dc: error: %s: %s is a symlink loop (it never reaches a folder)" % (var, loop)]
