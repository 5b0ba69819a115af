"""Stage ``data``: the identity of the splits a run reads.

The LMDBs themselves are made (IDX -> LMDB) or found before the stages run,
because the net and its schedule depend on them; this stage records what
they are, so that other data redoes every stage that read them.
"""
from __future__ import annotations

from caffe_dc.base.fingerprint import fingerprint, lmdb_identity
from caffe_dc.stages.run import Run


def stage_inputs(r: Run) -> dict:
    # The images are named by their checksums: where they were read from is recorded, not an input, so the
    # same MNIST fetched another way (another mirror, the wheel) does not redo the run.
    out = {k: v for k, v in r.info._asdict().items() if k != "source"}
    if not r.src.paper:
        # A user's files are inputs too: a changed net, solver or LMDB redoes everything.
        out["net"] = fingerprint([str(r.src.train_val), str(r.src.solver), list(r.src.changes)])
        out["lmdbs"] = {p: lmdb_identity(p) for p in {r.info.train_lmdb, r.info.test_lmdb, r.info.val_lmdb} if p}
    return out


def run_stage(r: Run) -> dict:
    return dict(stage_inputs(r), source=r.info.source)
