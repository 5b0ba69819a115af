"""Files: the one way this package writes an output, and the check that no output lands on an input.

An output is written to a temp file in its own folder, fsync-ed, given the
permissions a plain ``open()`` would have given it (``mkstemp`` makes 0600),
and renamed over the target, so a reader never sees half a file and a crash
never leaves one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from typing import Iterable, Optional

from caffe_dc.base.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str):
    """A temp file name beside ``path`` for a writer that wants a name, not bytes (Caffe's
    ``net.save``). When the block ends without an error the file is fsync-ed, given the permissions
    a plain ``open()`` would have given it, and renamed over ``path``; otherwise it is removed."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
        os.close(fd)
    except OSError as e:
        raise InputError("cannot write %s: %s" % (path, e.strerror or e))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise InputError("cannot write %s: %s" % (path, e.strerror or e))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def require_file(path: str, what: str) -> None:
    """Refuse, in one line that says why, an input ``what`` (e.g. "caffemodel") that is not a readable
    file: missing, a dangling symlink, a symlink loop, a folder, or behind a missing folder."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError("%s %s is a symlink loop (it never reaches a file)" % (what, path))
        if os.path.islink(path):
            raise InputError("%s %s is a symlink to %s, which does not exist" % (what, path, os.readlink(path)))
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InputError("no such %s: %s" % (what, path))
        raise InputError("cannot read %s %s: %s" % (what, path, e.strerror or e))
    if stat.S_ISDIR(st.st_mode):
        raise InputError("%s %s is a folder, not a file" % (what, path))
    if not stat.S_ISREG(st.st_mode):
        raise InputError("%s %s is not a regular file" % (what, path))


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_writable_folder(folder: str, what: str) -> None:
    """``folder`` exists or can be made, and a file can be created in it (tried, not guessed: root
    and read-only mounts make permission bits lie)."""
    probe = os.path.abspath(folder or ".")
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise InputError("cannot write %s: %s is not a folder" % (what, probe))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".caffe-dc-probe.", dir=probe)
    except OSError as e:
        raise InputError("cannot write %s: %s: %s" % (what, probe, e.strerror or e))
    os.close(fd)
    os.unlink(tmp)


def check_outputs(inputs: Iterable[Optional[str]], files: Iterable[Optional[str]] = (),
                  folders: Iterable[Optional[str]] = ()) -> None:
    """Refuse, before any work starts, outputs that would write over an input or over each other,
    or that cannot be written at all. ``files`` are output files, ``folders`` output folders;
    ``None`` entries (options not given) are skipped. Identity is by file, so a symlink or a
    hard link to an input counts as that input."""
    ins = [p for p in inputs if p]
    outs = [p for p in files if p]
    dirs = [p for p in folders if p]
    for i, out in enumerate(outs):
        if os.path.isdir(out):
            raise InputError("output %s is a folder" % out)
        for inp in ins:
            if _same_file(out, inp):
                raise InputError("output %s would overwrite the input %s" % (out, inp))
        for other in outs[:i]:
            if _same_file(out, other):
                raise InputError("outputs %s and %s are the same file" % (other, out))
        _check_writable_folder(os.path.dirname(os.path.abspath(out)), out)
    for d in dirs:
        if os.path.lexists(d) and not os.path.isdir(d):
            raise InputError("output folder %s is not a folder" % d)
        for inp in ins:
            if _same_file(d, inp):
                raise InputError("output folder %s is the input %s" % (d, inp))
        for out in outs:
            if _same_file(d, out):
                raise InputError("output folder %s is the output file %s" % (d, out))
        _check_writable_folder(d, d)
