"""Names of the blobs that carry a compressed layer's state beside its weights.

A compressed layer ``L`` has ``L_mask`` (1.0 kept, 0.0 pruned) and, once
quantized, ``L_codebook`` and ``L_codes``. The prototxt rewriter creates
them, the solver hooks enforce them and the codec reads them, so their
names live here, below all three.
"""
from __future__ import annotations

MASK, CODEBOOK, CODES = "mask", "codebook", "codes"
HELPER_KINDS = (MASK, CODEBOOK, CODES)


def blob_name(layer: str, kind: str) -> str:
    return "%s_%s" % (layer, kind)


def is_helper(name: str) -> bool:
    """True for a mask, codebook or codes blob (not a layer of the original net)."""
    return any(name.endswith("_" + k) for k in HELPER_KINDS)
