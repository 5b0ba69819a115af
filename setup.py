from setuptools import find_packages, setup

setup(
    name="caffe-dc",
    version="0.1.0",
    description="Deep Compression (pruning, trained quantization, Huffman coding) on real Caffe",
    packages=find_packages(include=["caffe_dc", "caffe_dc.*"]),
    package_data={"caffe_dc": ["assets/*", "assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.9",
    entry_points={"console_scripts": ["caffe-dc = caffe_dc.cli:main"]},
)
