"""The image path's pure functions: decode untrusted bytes safely, hash them, match against a bank.

Uploads are attacker-controlled bytes, so ``decode_image`` checks everything it can from the header
before decoding a single pixel (size in bytes, format, pixel count) and turns every decoder failure
into an ``ImageRejected`` with a short reason the job can record. An animation is read as its first
frame plus a few frames sampled across it, so a harmful frame cannot hide behind a harmless first one.
Images by URI are read from local files, or from an object store through fsspec when the store's
filesystem library is installed; any other scheme is refused (the job fetches nothing from the web).

Perceptual hashes: imagehash's pHash (64 bits, 16 hex characters) and Meta's PDQ through ``pdqhash``
(256 bits, 64 hex characters, with a quality from 0 to 100: a flat or tiny image's PDQ hash says little
and is not matched). ``match_bank`` is the naive linear scan that any faster index must agree with.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from urllib.parse import urlsplit

import imagehash
import numpy as np
import pdqhash
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "WEBP", "BMP")

# PIL's own decompression-bomb guard, a backstop behind the explicit ``max_pixels`` check: it warns
# above this many pixels and refuses twice as many. 40 megapixels is a large phone photo; no upload
# to a children's game needs more, and callers may not ask ``decode_image`` for more than this.
PIXEL_CEILING = 40_000_000
Image.MAX_IMAGE_PIXELS = PIXEL_CEILING

# Flattening transparent images onto white matches how a client shows them on a light background.
_FLATTEN_BACKGROUND = (255, 255, 255, 255)


REASON_EMPTY = "empty"
REASON_TOO_MANY_BYTES = "too_many_bytes"
REASON_FORMAT_NOT_ALLOWED = "format_not_allowed"  # an unknown format, or a known one not in ALLOWED_FORMATS
REASON_TOO_MANY_PIXELS = "too_many_pixels"
REASON_UNDECODABLE = "undecodable"  # an allowed format, but truncated or corrupt
REASON_URI_SCHEME_NOT_ALLOWED = "uri_scheme_not_allowed"
REASON_URI_STORE_UNAVAILABLE = "uri_store_unavailable"  # an object store whose library is not installed
REASON_URI_UNREADABLE = "uri_unreadable"
REASON_URI_OUTSIDE_ROOTS = "uri_outside_roots"  # a local path outside the configured upload folders

# Object stores read through fsspec, each only when its filesystem package (s3fs, gcsfs, adlfs) is
# installed. Web schemes are left out on purpose: the job makes no outbound requests.
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs")

# Frames of an animation that are decoded and screened: the first, and up to this many in all spread
# evenly over the first FRAME_SCAN_LIMIT frames, fewer when the canvas is large (``_frames_in_budget``).
SAMPLED_FRAMES = 4
FRAME_SCAN_LIMIT = 64


class ImageRejected(Exception):
    """An upload that is not decoded. ``reason`` is one of the ``REASON_*`` codes; ``detail`` is for people."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageHashes:
    sha256: str  # of the bytes as uploaded: exact re-uploads
    phash: str  # 16 hex characters: edited re-uploads (resize, recompression, small crops)
    pdq: str  # 64 hex characters: the format industry hash lists (ThreatExchange) are shared in
    pdq_quality: int  # 0-100; below the policy's minimum the PDQ hash is not matched


def read_uri(uri: str, max_bytes: int, local_roots: Sequence[Path] = (), timeout_s: float = 10.0) -> bytes:
    """The bytes behind an upload's URI (a local path or ``file://`` inside one of `local_roots`, or an
    object store), at most ``max_bytes + 1`` of them read so that ``decode_image`` can refuse an oversized
    file. A local path elsewhere (``file:///proc/self/environ``), or anything but a regular file there (a
    FIFO would block the reader), is refused: an upload names the platform's images, not the job's files.
    An object store that has not answered within ``timeout_s`` makes the upload unreadable."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("", "file"):
        path = Path(uri.removeprefix("file://")).resolve()
        if not any(path.is_relative_to(Path(root).resolve()) for root in local_roots):
            raise ImageRejected(REASON_URI_OUTSIDE_ROOTS, f"{path} is outside the upload folders "
                                                          f"({', '.join(map(str, local_roots)) or 'none configured'})")
        if path.exists() and not path.is_file():
            raise ImageRejected(REASON_URI_UNREADABLE, f"{path} is not a regular file")
        return _read_capped(lambda: open(path, "rb"), max_bytes)
    if scheme not in OBJECT_STORE_SCHEMES:
        raise ImageRejected(REASON_URI_SCHEME_NOT_ALLOWED,
                            f"{scheme}:// (allowed: local paths, file://, {', '.join(OBJECT_STORE_SCHEMES)})")
    try:
        import fsspec  # the object-store route only: a job with local images needs no fsspec

        fsspec.get_filesystem_class(scheme)
    except ImportError as error:
        raise ImageRejected(REASON_URI_STORE_UNAVAILABLE, f"{scheme}:// needs a library that is not installed: "
                                                          f"{error}") from None
    # Each store library has its own timeout settings (and some none that bound a whole read), so the
    # deadline is kept here, the same for all: a read past it is abandoned to its thread, which ends when
    # the store finally answers or drops the connection, and the upload goes to dead-letter.
    reading = _STORE_READERS.submit(_read_capped, lambda: fsspec.open(uri, "rb").open(), max_bytes)
    try:
        return reading.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        reading.cancel()  # a read still queued behind stalled ones never starts
        raise ImageRejected(REASON_URI_UNREADABLE, f"{scheme}:// did not answer within {timeout_s:g} s") from None


# Object-store reads in flight at once, per process: a batch's uploads are read one after another, so a few
# threads leave room for reads abandoned to a stalled store.
_STORE_READERS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="lifeguard-store-read")


def _read_capped(opener, max_bytes: int) -> bytes:
    try:
        with opener() as stream:
            return stream.read(max_bytes + 1)
    except Exception as error:  # noqa: BLE001 -- missing, unreadable, a directory, a store refusing: all unreadable
        raise ImageRejected(REASON_URI_UNREADABLE, f"{type(error).__name__}: {error}") from None


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decodes an upload to an RGB image: the first frame, EXIF orientation applied, alpha on white."""
    return decode_frames(data, max_bytes, max_pixels, 1)[0]


def decode_frames(data: bytes, max_bytes: int, max_pixels: int, frames: int = SAMPLED_FRAMES) -> list[Image.Image]:
    """Decodes an upload to RGB images: the first frame, then for an animation up to ``frames - 1`` more
    spread evenly over it; each upright and with alpha on white."""
    if max_pixels > PIXEL_CEILING:
        raise ValueError(f"max_pixels {max_pixels} is above PIXEL_CEILING {PIXEL_CEILING}")
    if not data:
        raise ImageRejected(REASON_EMPTY)
    if len(data) > max_bytes:
        raise ImageRejected(REASON_TOO_MANY_BYTES, f"more than {max_bytes} bytes")
    image = _open_header(data)
    _check_canvas(image, max_pixels, 0)
    try:
        # n_frames reads the frame headers only (no canvas growth, no pixels); decoding then walks frame by frame.
        wanted = _sampled_frames(_frames_in_budget(image, max_pixels), frames)
        decoded, walked_pixels = [], 0
        for index in range(wanted[-1] + 1):
            if index:
                image.seek(index)  # decodes the frame before, and may enlarge the canvas for this one
                _check_canvas(image, max_pixels, index)
            walked_pixels += image.size[0] * image.size[1]
            if walked_pixels > max_pixels:  # an enlarged canvas spent the budget: the frames decoded so far
                break
            if index in wanted:
                decoded.append(_decoded_frame(image))
        return decoded
    except ImageRejected:
        raise
    except Image.DecompressionBombError as error:  # a frame far past the ceiling, refused by PIL itself
        raise ImageRejected(REASON_TOO_MANY_PIXELS, str(error)) from error
    # The decoders raise many exception types on hostile or truncated input (OSError, SyntaxError,
    # ValueError, struct.error, ...): each is a rejected upload, never a crashed job.
    except Exception as error:  # noqa: BLE001
        raise ImageRejected(REASON_UNDECODABLE, f"{type(error).__name__}: {error}") from error


def _check_canvas(image: Image.Image, max_pixels: int, frame: int) -> None:
    """Before a frame is decoded: a GIF frame reaching past the canvas makes PIL enlarge the canvas for it and
    every frame after, so a small header can hide a huge frame. Each frame's canvas is held to ``max_pixels``."""
    width, height = image.size
    if width * height > max_pixels:
        where = "" if frame == 0 else f"frame {frame} enlarges the canvas to "
        raise ImageRejected(REASON_TOO_MANY_PIXELS, f"{where}{width}x{height} > {max_pixels} pixels")


def _frames_in_budget(image: Image.Image, max_pixels: int) -> int:
    """Frames that may be walked: GIF frames decode in sequence, each over the whole canvas, so at most
    ``max_pixels`` pixels are decoded in all, and never more than FRAME_SCAN_LIMIT frames."""
    width, height = image.size
    return max(1, min(getattr(image, "n_frames", 1), FRAME_SCAN_LIMIT, max_pixels // max(width * height, 1)))


def _sampled_frames(walkable: int, frames: int) -> list[int]:
    """`frames` frame indices spread evenly over the first `walkable` (``_frames_in_budget``), both ends included."""
    count = min(frames, walkable)
    return sorted({round(i * (walkable - 1) / max(count - 1, 1)) for i in range(count)})


def _decoded_frame(image: Image.Image) -> Image.Image:
    image.load()
    return _flatten_to_rgb(ImageOps.exif_transpose(image))


def _open_header(data: bytes) -> Image.Image:
    """Reads only the header, and only with the allowed formats' parsers (less attack surface)."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as error:
        # PIL says the same for an unknown format and a broken header of a known one; the magic number tells.
        if _has_allowed_signature(data):
            raise ImageRejected(REASON_UNDECODABLE, "broken header") from error
        raise ImageRejected(REASON_FORMAT_NOT_ALLOWED, f"not one of {', '.join(ALLOWED_FORMATS)}") from error
    except Image.DecompressionBombError as error:
        raise ImageRejected(REASON_TOO_MANY_PIXELS, str(error)) from error
    except Exception as error:  # noqa: BLE001 -- a header parser choking on hostile bytes
        raise ImageRejected(REASON_UNDECODABLE, f"{type(error).__name__}: {error}") from error


def _has_allowed_signature(data: bytes) -> bool:
    return (data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _FLATTEN_BACKGROUND)
    return Image.alpha_composite(background, rgba).convert("RGB")


def image_hashes(image: Image.Image, data: bytes) -> ImageHashes:
    """``image`` is ``decode_image(data, ...)`` (or another frame of it); ``data`` the bytes as uploaded."""
    pdq, pdq_quality = pdq_hash(image)
    return ImageHashes(sha256=hashlib.sha256(data).hexdigest(), phash=str(imagehash.phash(image)),
                       pdq=pdq, pdq_quality=pdq_quality)


def pdq_hash(image: Image.Image) -> tuple[str, int]:
    """PDQ of an RGB image: (64 hex characters, quality 0-100), bits in ThreatExchange's order."""
    bits, quality = pdqhash.compute(np.asarray(image))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)


def hamming(a_hex: str, b_hex: str) -> int:
    """The number of differing bits between two hashes of the same length, given as hex."""
    if len(a_hex) != len(b_hex):
        raise ValueError(f"hashes of different lengths: {len(a_hex)} and {len(b_hex)} hex characters")
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


def match_bank(
    phash_hex: str, bank: Mapping[str, str] | Iterable[str], max_distance: int
) -> tuple[str, int] | None:
    """The closest bank hash within ``max_distance`` bits, and its distance; None if there is none.

    The reference implementation: a linear scan. ``bank`` is either an iterable of hashes or a mapping
    from hash to whatever the caller files under it (a label, a bank name); a mapping is scanned by key.
    Ties go to the smallest hash so that any faster index can agree exactly.
    """
    best: tuple[int, str] | None = None
    for bank_hash in bank:
        candidate = (hamming(phash_hex, bank_hash), bank_hash)
        if best is None or candidate < best:
            best = candidate
    if best is None or best[0] > max_distance:
        return None
    distance, bank_hash = best
    return bank_hash, distance
