"""Real benign images for false-match tests: at least 200 distinct pictures that no bank should match.

Three sources, all on the machine before any test runs (no network at test time):
- the published reference vectors' originals (``../shared/data/reference-vectors``), not their edits;
- the sample images inside scikit-image's, matplotlib's and scikit-learn's wheels, read as package files
  (skimage itself is never imported, so it is installed with ``--no-deps``);
- the raster wallpapers and artwork of Debian main's wallpaper packages (DFSG-free: GPL-2+, CC-BY(-SA),
  CC0, LGPL), found through dpkg's list of each package's files.

Distinct means: a different file (SHA-256), and no two kept pictures within the policy's near-miss pHash
distance of each other, so the same picture at another size, or its light and dark variants, count once.
Each source is read in ascending file size, so the smallest rendition of a picture is the one kept; pictures
wider or taller than ``MAX_SIDE`` are scaled down and re-encoded as an upload would be (and to keep the
test fast).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Callable, Iterable

import imagehash

from lifeguard import PROJECT_ROOT
from udfs.images import PIXEL_CEILING, ImageRejected, decode_image
from udfs.policy import load_policy

REFERENCE = PROJECT_ROOT.parent / "shared" / "data" / "reference-vectors"
# Originals only: bridge-mods/ and dih/ are edits of one bridge photo, letterboxed_sample-b.jpg an edit of
# sample-b.jpg (itself byte-identical to bridge-mods/aaa-orig.jpg).
REFERENCE_ORIGINALS = ("pdq-threatexchange/labelme-subset/*", "pdq-threatexchange/misc-images/*",
                       "pdq-threatexchange/pytx-resources/*", "imagehash/*.png")
REFERENCE_EDITS = {"letterboxed_sample-b.jpg"}
SKIMAGE_PIN = "scikit-image==0.26.0"
# Where each Python distribution keeps its sample pictures (matplotlib and scikit-learn are already runtime
# dependencies).
PACKAGE_SAMPLE_FOLDERS = {"scikit-image": ("skimage", "data"), "matplotlib": ("matplotlib", "mpl-data", "sample_data"),
                          "scikit-learn": ("sklearn", "datasets", "images")}
DEBIAN_PACKAGES = ("gnome-backgrounds", "mate-backgrounds", "plasma-workspace-wallpapers", "lomiri-wallpapers",
                   "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "ukui-wallpapers", "sway-backgrounds",
                   "desktop-base", "lxqt-themes", "lxde-common", "xfdesktop4-data", "gimp-data")
DPKG_INFO = Path("/var/lib/dpkg/info")
INSTALL_HINT = (f"install the benign image sources: apt-get install -y --no-install-recommends "
                f"{' '.join(DEBIAN_PACKAGES)} && .venv/bin/pip install --no-deps {SKIMAGE_PIN}")
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MIN_SIDE = 128  # smaller files are icons and UI pieces, not pictures
MAX_SIDE = 1024
MIN_BYTES = 4_000
PHASH_NEAR = load_policy(PROJECT_ROOT / "flink-conf" / "policy.yaml").images.distances["phash"].near


class BenignSourcesMissing(RuntimeError):
    """A source of benign images is not installed: the message names the command that installs it."""


@dataclass(frozen=True)
class BenignImage:
    source: str
    name: str  # the file it came from
    data: bytes  # as uploaded: the file's bytes, or scaled to MAX_SIDE and re-encoded
    phash: imagehash.ImageHash  # of the decoded (and scaled) picture, for telling pictures apart


def reference_files() -> list[Path]:
    if not REFERENCE.is_dir():
        raise BenignSourcesMissing(f"no reference vectors at {REFERENCE}: the shared data must sit beside the repo")
    return [path for pattern in REFERENCE_ORIGINALS for path in REFERENCE.glob(pattern)
            if path.name not in REFERENCE_EDITS]


def package_samples(name: str) -> list[Path]:
    """The sample pictures an installed Python distribution ships, read as files of its wheel."""
    try:
        wheel = distribution(name)
    except PackageNotFoundError:
        raise BenignSourcesMissing(f"{name} is not installed: {INSTALL_HINT}") from None
    folder = PACKAGE_SAMPLE_FOLDERS[name]
    return [Path(wheel.locate_file(file)) for file in wheel.files or () if file.parts[:len(folder)] == folder]


def debian_files() -> list[Path]:
    missing = [package for package in DEBIAN_PACKAGES if not (DPKG_INFO / f"{package}.list").exists()]
    if missing:
        raise BenignSourcesMissing(f"Debian packages {' '.join(missing)} are not installed: {INSTALL_HINT}")
    return [Path(line) for package in DEBIAN_PACKAGES
            for line in (DPKG_INFO / f"{package}.list").read_text().splitlines()]


SOURCES: dict[str, Callable[[], list[Path]]] = {
    "reference-vectors": reference_files,
    **{name: partial(package_samples, name) for name in PACKAGE_SAMPLE_FOLDERS},
    "debian": debian_files}


def as_upload(path: Path) -> tuple[bytes, imagehash.ImageHash] | None:
    """The picture as it would be uploaded, and its pHash; None for files that are not a picture and for
    icons, too small to be one."""
    data = path.read_bytes()
    try:
        image = decode_image(data, len(data), PIXEL_CEILING)
    except ImageRejected:
        return None
    if min(image.size) < MIN_SIDE:
        return None
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        data = buffer.getvalue()
    return data, imagehash.phash(image)


def candidates(paths: Iterable[Path]) -> list[Path]:
    files = {path for path in paths if path.suffix.lower() in RASTER_SUFFIXES and path.is_file()
             and path.stat().st_size >= MIN_BYTES}
    return sorted(files, key=lambda path: (path.stat().st_size, str(path)))


@lru_cache(maxsize=4)
def benign_images(excluded_sha256: frozenset[str] = frozenset()) -> tuple[BenignImage, ...]:
    """Every distinct real benign picture of every source, in source order. ``excluded_sha256``: files left
    out (the banked ones), compared before the re-encoding."""
    seen_files, kept = set(excluded_sha256), []
    for source, files in SOURCES.items():
        for path in candidates(files()):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen_files:
                continue
            seen_files.add(digest)
            upload = as_upload(path)
            if upload is None or any(upload[1] - other.phash <= PHASH_NEAR for other in kept):
                continue
            kept.append(BenignImage(source, str(path), *upload))
    return tuple(kept)
