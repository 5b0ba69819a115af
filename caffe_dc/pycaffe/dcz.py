"""A ``.dcz`` file straight into a ``caffe.Net`` (``caffe_dc.load_net``), decoded in memory."""
from __future__ import annotations

from caffe_dc.base.errors import InputError
from caffe_dc.codec.frontend import decode_bytes, read_blob
from caffe_dc.codec.model import DEFAULT_MAX_WEIGHTS
from caffe_dc.pycaffe import validate
from caffe_dc.pycaffe.caffemodel import load_net_proto
from caffe_dc.pycaffe.solving import import_caffe


def load_net(deploy: str, dcz: str, phase: str = "TEST", max_weights: int = DEFAULT_MAX_WEIGHTS):
    """A ``caffe.Net`` of the prototxt ``deploy`` with the weights of the ``.dcz`` file ``dcz``.

    The file is decoded in memory (no caffemodel is written) and every blob
    is copied into the net's layer of the same name, as Caffe copies a
    caffemodel: layers the net does not have are ignored, and a blob may
    differ from the net's in shape only if it holds as many values. Every
    parameterised layer of the net must get its weights (one left to Caffe's
    random fillers is an ``InputError``). ``phase``: "TEST" or "TRAIN".
    """
    if phase not in ("TEST", "TRAIN"):
        raise InputError("phase must be TEST or TRAIN, not %r" % (phase,))
    caffe = import_caffe()
    # Caffe aborts the whole process on some broken prototxts: check first, as the CLI does.
    validate.check_net(load_net_proto(deploy), deploy, build_phase=1 if phase == "TEST" else 0)
    params, _, _ = decode_bytes(read_blob(dcz), max_weights)
    net = caffe.Net(deploy, getattr(caffe, phase))
    missing = [n for n in net.params if n not in params]
    if missing:
        raise InputError("%s has no weights for the net's layer %r (%s): the file and %s do not belong together"
                         % (dcz, missing[0], ", ".join(missing), deploy))
    for name, dst in net.params.items():
        src = params[name].blobs
        if len(src) != len(dst):
            raise InputError("layer %r has %d blobs in %s but %d in %s" % (name, len(src), dcz, len(dst), deploy))
        for i, (d, s) in enumerate(zip(dst, src)):
            if d.data.size != s.size:
                raise InputError("layer %r blob %d has shape %s in %s but %s in %s"
                                 % (name, i, tuple(s.shape), dcz, tuple(d.data.shape), deploy))
            d.data[...] = s.reshape(d.data.shape)
    return net
