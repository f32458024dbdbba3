import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements(name):
    with open(os.path.join(HERE, name)) as f:
        lines = (line.split("#")[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith("-r")]


SEG = ["paddleseg==2.8.0"]
DET = ["paddledet==2.6.0"]
VIZ = ["matplotlib>=3.5"]  # tools/ablate.py's chart, tools/visualize.py
ONNX = ["paddle2onnx==2.1.0", "onnxruntime==1.32.0"]  # tools/export.py onnx, and running it
setup(
    name="paddle-pale",
    version="0.1.0",
    description="Pale Transformer (AAAI 2022) for PaddlePaddle: classification, "
                "PaddleSeg and PaddleDetection backbones",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["paddle_pale", "paddle_pale.*"]),
    package_data={"paddle_pale.engine": ["defaults.yaml"],
                  "paddle_pale.kernels": ["cpu_ops.cc"]},  # built on first use
    python_requires=">=3.9,<3.12",
    install_requires=requirements("requirements.txt"),
    extras_require={
        "seg": SEG,
        "det": DET,
        "viz": VIZ,
        "onnx": ONNX,
        "dev": requirements("requirements-dev.txt"),
    },
    license="Apache-2.0",
)
