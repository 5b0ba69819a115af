"""Fingerprints: what decides whether a finished stage of a run can be reused.

A stage is reused only when the hash of its resolved inputs, of the stages
it reads and of the code its numbers depend on is unchanged (``pipeline``).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_SUFFIXES = (".py", ".prototxt", ".json")


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def package_path(module_file: str) -> str:
    """A module's path inside the package ('stages/prune.py'), as ``code_version`` takes it."""
    return os.path.relpath(os.path.abspath(module_file), PACKAGE).replace(os.sep, "/")


def code_version(parts: Iterable[str]) -> str:
    """Hash of the named package folders and files (their code, net definitions and schedules)."""
    h = hashlib.sha256()
    walk = []
    for part in sorted(set(parts)):
        path = os.path.join(PACKAGE, part)
        if os.path.isfile(path):
            walk.append((os.path.dirname(path), [], [os.path.basename(path)]))
        else:
            walk += sorted(os.walk(path))
    for folder, _, files in walk:
        for f in sorted(files):
            if f.endswith(CODE_SUFFIXES):
                path = os.path.join(folder, f)
                h.update(os.path.relpath(path, PACKAGE).encode() + b"\0")
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()[:16]


def lmdb_identity(path: str) -> list:
    """Size and modification time of an LMDB's data file: a rewritten LMDB is a different data set."""
    f = os.path.join(path, "data.mdb")
    st = os.stat(f if os.path.isfile(f) else path)
    return [st.st_size, int(st.st_mtime)]
