"""Versions of the libraries only this layer may import (Caffe), registered with ``base.provenance``.

``base`` must never import pycaffe, even to ask its version, so the probe
lives here and ``provenance.environment()`` calls it once this module is
imported (``caffe_dc.pycaffe`` and the CLI import it).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from caffe_dc.base import provenance


def caffe_version() -> Optional[str]:
    """pycaffe's ``__version__``; None if it does not import. Imports Caffe (quietly) if not yet loaded."""
    # GLOG stays quiet unless the caller already chose a level (solving.import_caffe does).
    if "caffe" not in sys.modules:
        os.environ.setdefault("GLOG_minloglevel", os.environ.get("CAFFE_DC_GLOG", "2"))
    try:
        import caffe
    except Exception:   # ImportError, or a broken shared library raising something else
        return None
    return getattr(caffe, "__version__", None)


provenance.register_version("caffe", caffe_version)
