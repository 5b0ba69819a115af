"""Limits that several layers must agree on, defined once.

The container stores weight and index codes in alphabets of at most
``2**MAX_BITS`` symbols; quantize, reproduce and encode refuse wider codes
when their arguments are parsed, so a long run never trains towards a width
the encoder will reject at the end.
"""
from __future__ import annotations

import numbers
import os

from caffe_dc.base.errors import InputError

MAX_BITS = 12

# Caffe's solver seed: a random_seed below 0 means "seed from the clock" (a different model every time),
# and its generators take 32 bits; 0 is left out so that no seed reads as "unset".
MIN_SEED, MAX_SEED = 1, (1 << 31) - 1
# `reproduce --seeds N`: each seed is a whole run (minutes to an hour); more than this is a typo.
MAX_SEEDS = 100
# Images a layer-wise refit reads at the least (``encode --calib``, a schedule's ``reconstruct``): fewer fit
# their own images whatever they do to others.
MIN_CALIBRATION_IMAGES = 100


def bits_in_range(v, low: int = 1) -> bool:
    """An integer (not a bool) in ``low``..MAX_BITS: weight bits (``low`` 1) or an index width (0: dense)."""
    return not isinstance(v, bool) and isinstance(v, numbers.Integral) and low <= v <= MAX_BITS


def check_bits(v, what: str = "bits per weight", low: int = 1) -> int:
    """``v`` as an int if ``bits_in_range``; a one-line ``InputError`` naming ``what`` otherwise."""
    if not bits_in_range(v, low):
        raise InputError("%s must be an integer in %d..%d, got %r" % (what, low, MAX_BITS, v))
    return int(v)


# A caffemodel's declared shapes may ask for at most this many bytes in all (default 16 GiB, ~30x
# VGG-16); CAFFE_DC_MAX_CAFFEMODEL_BYTES raises or lowers it.
DEFAULT_MAX_CAFFEMODEL_BYTES = 16 << 30


def max_caffemodel_bytes() -> int:
    text = os.environ.get("CAFFE_DC_MAX_CAFFEMODEL_BYTES")
    if not text:
        return DEFAULT_MAX_CAFFEMODEL_BYTES
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise InputError("CAFFE_DC_MAX_CAFFEMODEL_BYTES must be a positive integer, got %r" % text)
    return v
