from setuptools import find_packages, setup

setup(
    name="caffe-dc",
    version="0.1.0",
    description="Deep Compression (pruning, trained quantization, Huffman coding) on real Caffe",
    packages=find_packages(include=["caffe_dc", "caffe_dc.*"]),
    # The nets' definitions ship with the package: an installed caffe-dc needs no checkout.
    package_data={"caffe_dc": ["zoo/prototxt/*.prototxt", "zoo/solvers/*.prototxt", "zoo/schedules/*.json"]},
    python_requires=">=3.9",
    # pycaffe itself is not on PyPI: it comes from Debian's python3-caffe (see docker/Dockerfile).
    install_requires=["numpy", "protobuf", "lmdb", "matplotlib", "tqdm"],
    # k-means is our own exact 1-D Lloyd (algorithms.quantization.lloyd_1d); scikit-learn is only the tests'
    # oracle for it (and tools/bench_posthoc.py --sklearn).
    extras_require={"test": ["pytest", "hypothesis", "scikit-learn"]},
    entry_points={"console_scripts": ["caffe-dc = caffe_dc.cli:main"]},
)
