"""Stage ``encode``: the quantized model as ``model.dcz`` (the codec front end is ``codec.frontend``)."""
from __future__ import annotations

import dataclasses
import json

from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.tables import text_table
from caffe_dc.codec.frontend import encode_params
from caffe_dc.codec.storage_table import layer_headers, storage_rows, summary_lines
from caffe_dc.pycaffe.caffemodel import load_params
from caffe_dc.stages.run import StageRecord, indent


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    """The compressed file and its size figures."""
    blob: str
    bytes: int
    rate_pq: float
    rate_pqh: float
    original_bytes: int


def stage_inputs(r) -> dict:
    return {}


def run_stage(r) -> Record:
    """The quantized model as ``model.dcz`` (each layer at the index width of its smallest record)."""
    params = load_params(r.out("quantize").caffemodel)
    net = r.src.name if r.src.paper else None
    meta = {"dataset": r.info.name, "preset": r.preset}
    if not r.src.paper:
        meta["paper_net"] = None   # its own name must not send anyone to the paper's tables
    data, stats = encode_params(params, r.src.name, None, meta=meta)
    out = r.path("model.dcz")
    atomic_write(out, data)
    atomic_write(r.path("storage.json"), json.dumps(stats.to_dict(), indent=2).encode())
    print(indent(text_table(layer_headers(net), storage_rows(stats, net))))
    for line in summary_lines(stats, net):
        print("  " + line)
    t = stats.totals()
    return Record(blob=out, bytes=len(data), rate_pq=t["rate_pq"], rate_pqh=t["rate_pqh"],
                  original_bytes=t["original_bits"] // 8)
