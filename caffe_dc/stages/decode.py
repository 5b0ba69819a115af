"""Stage ``decode``: ``model.dcz`` back into a caffemodel, checked bit for bit against the quantized model."""
from __future__ import annotations

import dataclasses

from caffe_dc.base.blobs import is_helper
from caffe_dc.base.errors import InternalError
from caffe_dc.pycaffe.caffemodel import load_params, save_params
from caffe_dc.codec import frontend
from caffe_dc.stages.run import Run, StageRecord


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """The decoded caffemodel, checked bit for bit against the quantized one."""
    caffemodel: str
    values_checked: int
    bit_exact: bool


def stage_inputs(r: Run) -> dict:
    return {}


def run_stage(r: Run) -> Record:
    params, _, _ = frontend.decode_bytes(frontend.read_blob(r.out("encode").blob))
    out = r.path("decoded.caffemodel")
    save_params(params, out, name=r.src.name)
    quant = {k: v for k, v in load_params(r.out("quantize").caffemodel).items() if not is_helper(k)}
    try:
        n = frontend.verify_equal(quant, load_params(out), "decoded.caffemodel vs the quantized model")
    except Exception as e:   # our own file, just written: a mismatch is a bug in the codec, not bad input
        raise InternalError(str(e)) from e
    print("  %s: %d values, bit-identical to the quantized model" % (out, n))
    return Record(caffemodel=out, values_checked=n, bit_exact=True)
