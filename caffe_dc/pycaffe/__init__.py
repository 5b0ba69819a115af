"""Everything that touches pycaffe (``caffe``); ``versions`` registers Caffe's version with ``base.provenance``."""
from caffe_dc.pycaffe import versions  # noqa: F401
