"""Stage ``caffe test``: Caffe's own binary on the decoded and on the quantized model, on the test split.

An independent check of the decoder and of the exact scorer: the TEST batch
divides the split, so Caffe too counts each image once, and both models
must score the same.
"""
from __future__ import annotations

import dataclasses

from caffe_dc.base.errors import InternalError
from caffe_dc.pycaffe import nets, solving
from caffe_dc.pycaffe.caffemodel import load_net_proto, save_net_proto
from caffe_dc.stages.run import Run, StageRecord


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """``caffe test``'s figures for the decoded and the quantized model; ``accuracy`` the decoded one's."""
    decoded: dict
    quantized: dict
    accuracy: float


def stage_inputs(r: Run) -> dict:
    return {}


def run_stage(r: Run) -> Record:
    _, n_test = r.info.split("test")
    iters = solving.test_iters_for(load_net_proto(r.test_path), n_test)
    qproto = r.path("quantized_test.prototxt")   # beside test.prototxt: another stage's folder is not ours
    save_net_proto(nets.with_test_split(load_net_proto(r.out("quantize").prototxt), *r.info.split("test")), qproto)
    dec = solving.caffe_cli_test(r.test_path, r.out("decode").caffemodel, iters)
    qnt = solving.caffe_cli_test(qproto, r.out("quantize").caffemodel,
                                 solving.test_iters_for(load_net_proto(qproto), n_test))
    print("  caffe test (test split, %d images): decoded %.4f, quantized %.4f" % (n_test, dec["accuracy"],
                                                                                 qnt["accuracy"]))
    if dec["accuracy"] != qnt["accuracy"]:
        raise InternalError("decoded model scores %.6f under `caffe test` but the quantized one %.6f"
                            % (dec["accuracy"], qnt["accuracy"]))
    return Record(decoded=dec, quantized=qnt, accuracy=dec["accuracy"])
