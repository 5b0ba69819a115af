"""One run per run folder: an exclusive ``flock`` on a lock file inside it, held for the run's life.

Two runs into one folder would each rewrite the other's solvers, snapshots and
``pipeline.json``, and both could end with exit status 0 and a model neither
asked for. The lock is the kernel's: ``flock`` is released when its holder's
descriptor closes, so a run killed by any signal (SIGKILL included) leaves no
lock behind, only the file with its last holder's pid and command, which the
next holder overwrites. The file itself is never removed: unlinking a lock
file lets a waiter lock an inode no one else can find any more.

A second run does not wait: it exits at once (``InputError``, one line) naming
the holder's pid and command, read from the file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import Optional

from caffe_dc.base.errors import InputError

LOCK_NAME = ".caffe-dc.lock"
# A holder writes its pid and command just after it locks; a refused run waits this long for them
# before it reports what the file holds (an empty file, or a killed run's record).
READ_PATIENCE_S = 2.0


class RunLock:
    """The held lock of one folder (``acquire``); ``release`` or process exit frees it."""

    def __init__(self, folder: str, fd: int):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the only descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:   # a run that never reached ``release`` (an exception in its checks)
        self.release()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(folder: str, command: str, wait: bool = False) -> RunLock:
    """Lock ``folder`` (made if missing) for this process, or raise ``InputError`` naming who holds it;
    ``wait``: block until the holder is done instead (a shared cache that the next holder reuses)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise InputError("cannot lock the run folder %s: %s" % (folder, e.strerror or e))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise InputError("cannot lock the run folder %s: %s" % (folder, e.strerror or e))
        raise InputError("run folder %s is in use by another run (%s); wait for it to finish or give another --out"
                         % (folder, _holder(path)))
    record = (json.dumps({"pid": os.getpid(), "command": command}) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    return RunLock(folder, fd)


def _holder(path: str) -> str:
    """'pid N: COMMAND' of the lock's holder, as soon as the holder has written it."""
    deadline = time.monotonic() + READ_PATIENCE_S
    while True:
        rec = _read(path)
        if rec is not None and _alive(rec["pid"]):
            break
        if time.monotonic() >= deadline:
            if rec is None:
                return "pid unknown: it has not written its record yet"
            break
        time.sleep(0.05)
    return "pid %d: %s" % (rec["pid"], " ".join(str(rec["command"]).split()))


def _read(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            rec = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or isinstance(rec.get("pid"), bool) or not isinstance(rec.get("pid"), int):
        return None
    return rec


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs here; a pid of another pid namespace reads as gone, so this only decides
    how long to wait for a fresh record, never whether the folder is taken (the flock says that)."""
    if pid <= 0:   # 0 and below name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
