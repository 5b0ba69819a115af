"""caffe-dc: Deep Compression on real Caffe."""
__version__ = "0.1.0"


def load_net(deploy, dcz, phase="TEST", **kwargs):
    """``caffe.Net`` of the prototxt ``deploy`` with the weights of the compressed file ``dcz``.

    ``caffe_dc.load_net("deploy.prototxt", "model.dcz")`` decodes in memory;
    see ``caffe_dc.stages.encode.load_net``. Needs pycaffe, which is imported
    only when this is called (``import caffe_dc`` does not import Caffe).
    """
    from caffe_dc.stages.encode import load_net as load

    return load(deploy, dcz, phase, **kwargs)
