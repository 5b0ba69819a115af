"""One run per run folder (``base.runlock``, issue 30): real processes holding real flocks, no Caffe."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from caffe_dc.base import runlock
from caffe_dc.base.errors import InputError
from conftest import REPO

# A holder in its own process: locks FOLDER under COMMAND, says so, then waits to be killed.
HOLDER = """
import sys, time
sys.path.insert(0, %r)
from caffe_dc.base import runlock
lock = runlock.acquire(sys.argv[1], sys.argv[2])
print("locked", flush=True)
time.sleep(600)
""" % REPO


def _holder(folder, command):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), command], stdout=subprocess.PIPE,
                         universal_newlines=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_run_is_refused_at_once_naming_the_holder(tmp_path):
    holder = _holder(tmp_path / "run", "caffe-dc reproduce lenet-5 --out run")
    try:
        t0 = time.monotonic()
        with pytest.raises(InputError) as e:
            runlock.acquire(str(tmp_path / "run"), "caffe-dc reproduce lenet-5 --out run --seed 2")
        assert time.monotonic() - t0 < 1.0      # the holder's record is there: no waiting for it
        msg = str(e.value)
        assert "pid %d: caffe-dc reproduce lenet-5 --out run" % holder.pid in msg and "\n" not in msg
        assert "--seed 2" not in msg
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holders_lock_is_taken_over_with_a_fresh_record(tmp_path):
    holder = _holder(tmp_path / "run", "the killed run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    path = tmp_path / "run" / runlock.LOCK_NAME
    assert json.loads(path.read_text())["pid"] == holder.pid      # the stale record is still there ...
    with runlock.acquire(str(tmp_path / "run"), "the next run"):
        rec = json.loads(path.read_text())
        assert rec == {"pid": os.getpid(), "command": "the next run"}   # ... until the next holder replaces it
        # a third run now reads the live holder, not the killed one
        p = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r)\n"
                            "from caffe_dc.base import runlock\nrunlock.acquire(sys.argv[1], 'third')" % REPO,
                            str(tmp_path / "run")], stderr=subprocess.PIPE, universal_newlines=True)
        assert p.returncode != 0 and "pid %d: the next run" % os.getpid() in p.stderr
    # released: free again, in this process too
    runlock.acquire(str(tmp_path / "run"), "again").release()


def test_a_record_not_yet_written_is_waited_for(tmp_path, monkeypatch):
    """Between a holder's flock and its record the file holds the killed run's record (or nothing): the
    refused run waits for the live one rather than naming a dead pid."""
    folder = tmp_path / "run"
    holder = _holder(folder, "live run")
    path = folder / runlock.LOCK_NAME
    live = path.read_text()
    path.write_text(json.dumps({"pid": 2 ** 22 + 12345, "command": "long dead"}))   # what a killed run left
    restore = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(0.5); "
                                "open(sys.argv[1], 'w').write(sys.argv[2])", str(path), live])
    try:
        with pytest.raises(InputError) as e:
            runlock.acquire(str(folder), "second")
        assert "live run" in str(e.value) and "long dead" not in str(e.value)
    finally:
        restore.wait()
        holder.kill()
        holder.wait()


def test_different_folders_lock_independently(tmp_path):
    a = runlock.acquire(str(tmp_path / "a"), "a")
    b = runlock.acquire(str(tmp_path / "b"), "b")
    with pytest.raises(InputError):
        runlock.acquire(str(tmp_path / "a"), "a again")
    a.release()
    b.release()
