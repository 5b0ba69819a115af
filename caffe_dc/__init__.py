"""caffe-dc: Deep Compression on real Caffe."""
__version__ = "0.1.0"
