"""caffe-dc: Deep Compression on real Caffe."""
__version__ = "0.1.0"


def load_net(deploy, dcz, phase="TEST", **kwargs):
    """``caffe.Net`` of the prototxt ``deploy`` with the weights of the compressed file ``dcz``.

    ``caffe_dc.load_net("deploy.prototxt", "model.dcz")`` decodes in memory;
    see ``caffe_dc.pycaffe.dcz.load_net``. Needs pycaffe, which is imported
    only when this is called (``import caffe_dc`` does not import Caffe).
    """
    from caffe_dc.pycaffe.dcz import load_net as load

    return load(deploy, dcz, phase, **kwargs)


def load_arrays(dcz, max_weights=None):
    """``{layer name: [numpy arrays]}`` of a ``.dcz`` file, decoded in memory with numpy alone (no Caffe).

    The arrays are those ``caffe-dc decode`` writes into the caffemodel (weights, biases and raw
    blobs such as BatchNorm's), float32, in the net's order. ``max_weights``: refuse a file that
    declares more values than this (default: the decoder's, 2^28).
    """
    from caffe_dc.codec import frontend

    return frontend.load_arrays(dcz) if max_weights is None else frontend.load_arrays(dcz, max_weights)
