"""Stage ``data``: the identity of the splits a run reads.

The LMDBs themselves are made (IDX -> LMDB) or found before the stages run,
because the net and its schedule depend on them; this stage records what
they are, so that other data redoes every stage that read them.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional

from caffe_dc.base.fingerprint import fingerprint, lmdb_identity
from caffe_dc.pycaffe.datasets import DataInfo
from caffe_dc.stages.run import Run, StageRecord

# The record is ``DataInfo``'s fields, derived from it so that a new field of the data is recorded without a
# second list, then what only a user's net adds, then where the images were read from (last, as runs wrote it).
_INFO = tuple(f for f in DataInfo._fields if f != "source")
_OWN = (("net", Optional[str]), ("lmdbs", Optional[Dict[str, str]]), ("source", Optional[str]))
Record = dataclasses.make_dataclass(
    "Record",
    [(f, DataInfo.__annotations__[f]) + ((dataclasses.field(default=DataInfo._field_defaults[f]),)
                                         if f in DataInfo._field_defaults else ()) for f in _INFO]
    + [(f, t, dataclasses.field(default=None)) for f, t in _OWN],
    bases=(StageRecord,), frozen=True, namespace={
        "__doc__": "The splits a run reads (``pycaffe.datasets.DataInfo``), the user's net and LMDBs' identity "
                   "(``compress``), and where the images came from.",
        # Runs made before the images were named by their checksums have none; only a user's run has net/lmdbs.
        "OPTIONAL": ("checksums", "net", "lmdbs")})
Record.__module__ = __name__


def stage_inputs(r: Run) -> dict:
    # The images are named by their checksums: where they were read from is recorded, not an input, so the
    # same MNIST fetched another way (another mirror, the wheel) does not redo the run.
    out = {k: getattr(r.info, k) for k in _INFO}
    if not r.src.paper:
        # A user's files are inputs too: a changed net, solver or LMDB redoes everything.
        out["net"] = fingerprint([str(r.src.train_val), str(r.src.solver), list(r.src.changes)])
        out["lmdbs"] = {p: lmdb_identity(p) for p in {r.info.train_lmdb, r.info.test_lmdb, r.info.val_lmdb} if p}
    return out


def run_stage(r: Run) -> Record:
    return Record(source=r.info.source, **stage_inputs(r))
