"""What caffe-dc does with each type of layer, declared once.

Every path that has to know how a layer type is compressed asks here:
the prototxt rewriter and layer discovery (which types are prunable), the
schedule's ``[conv]``/``[fc]`` keys, the quantize stage, the post-hoc
encoder, the chooser and the CLI (default bits), and the encoder's paper
widths. A type missing from ``TYPE_KIND`` is never pruned or quantized: its
blobs pass through raw, bit for bit.

The bits follow the paper (section 3): 8 bits for convolutions, 5 for fully
connected layers; a Deconvolution is a convolution run backwards, with the
same weight statistics, so it is treated as one. The paper's own nets keep
their per-layer tables (``base.paper``), which win over the type's default.
"""
from __future__ import annotations

import enum
from typing import Dict, NamedTuple, Optional

from caffe_dc.base import paper


class Kind(str, enum.Enum):
    """The paper's contrast: convolutions tolerate less pruning and need more bits than fc layers."""
    CONV = "conv"
    FC = "fc"


class KindPolicy(NamedTuple):
    default_bits: int          # weight bits when nothing else says (section 3)
    index_bits: int            # the paper's relative-index width for a net outside its tables (section 2)


KIND_POLICY: Dict[Kind, KindPolicy] = {Kind.CONV: KindPolicy(8, 8), Kind.FC: KindPolicy(5, 5)}
# Which layer types are pruned and quantized, and as which kind.
TYPE_KIND: Dict[str, Kind] = {"Convolution": Kind.CONV, "Deconvolution": Kind.CONV, "InnerProduct": Kind.FC}
PRUNABLE_TYPES = tuple(TYPE_KIND)
KINDS = tuple(k.value for k in Kind)


def is_prunable(layer_type: str) -> bool:
    return layer_type in TYPE_KIND


def kind(layer_type: str) -> str:
    """'conv' or 'fc' (the schedule's ``[conv]`` / ``[fc]`` keys), for a prunable type."""
    try:
        return TYPE_KIND[layer_type].value
    except KeyError:
        raise KeyError("%r is not a prunable layer type (%s)" % (layer_type, ", ".join(PRUNABLE_TYPES)))


def default_bits(type_or_kind: str, net: Optional[str] = None, layer: Optional[str] = None) -> int:
    """Weight bits for ``layer``, of a prunable layer type or a kind ('conv' / 'fc'), when nothing says: the
    paper's table for its own nets (``net``), else the kind's. The one default: the quantize stage, post-hoc
    encoding and the chooser all ask here."""
    if net is not None and layer in paper.PAPER_BITS.get(net, {}):
        return int(paper.PAPER_BITS[net][layer])
    return KIND_POLICY[Kind(type_or_kind if type_or_kind in KINDS else kind(type_or_kind))].default_bits


def paper_index_bits(layer_type: str, net: Optional[str] = None) -> int:
    """The paper's index width: its tables for its own nets (5 for LeNet and VGG-16, 4 for AlexNet), else
    section 2's 8 bits for conv layers and 5 for fc."""
    if net in paper.PAPER_INDEX_BITS:
        return int(paper.PAPER_INDEX_BITS[net])
    return KIND_POLICY[Kind(kind(layer_type))].index_bits
