"""Files: the one way this package writes an output, and the check that no output lands on an input.

An output is written to a temp file in its own folder, fsync-ed, given the
permissions a plain ``open()`` would have given it (``mkstemp`` makes 0600),
and renamed over the target, so a reader never sees half a file and a crash
never leaves one.
"""
from __future__ import annotations

import os
import tempfile

from caffe_dc.base.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (temp file, fsync, rename)."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    except OSError as e:
        raise InputError("cannot write %s: %s" % (path, e.strerror or e))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise InputError("cannot write %s: %s" % (path, e.strerror or e))
        raise
