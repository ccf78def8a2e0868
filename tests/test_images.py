"""udfs.images: decoding hostile bytes, pHash against the published vectors, the reference bank scan."""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import random
import struct
import sys
import time
import zlib

import numpy as np
import pytest
from fsspec.spec import AbstractFileSystem
from PIL import Image

from lifeguard import PROJECT_ROOT
from tools.simulator import IMAGE_EDITS, blocklist_hashes, blocklist_images, edited_reupload, encode_image, \
    procedural_image
from udfs.images import (FRAME_SCAN_LIMIT, PIXEL_CEILING, ImageHashes, ImageRejected, _sampled_frames, decode_frames,
                         decode_image, hamming, image_hashes, match_bank, pdq_hash, read_uri)

IMAGEHASH_VECTORS = PROJECT_ROOT.parent / "shared" / "data" / "reference-vectors" / "imagehash"
GENEROUS = {"max_bytes": 10_000_000, "max_pixels": 10_000_000}
# How far (in pHash bits) each kind of edited re-upload may land from its original. pHash shrugs off
# scaling, recompression and colour shifts; even a 0.5-2% crop moves it a lot more.
EDITED_MAX_DISTANCE = {"exact": 0, "resize": 4, "jpeg": 6, "colour_shift": 8, "crop": 12, "crop_resize_jpeg": 12}
MATCH_DISTANCE = max(EDITED_MAX_DISTANCE.values())
UNRELATED_MIN_DISTANCE = 16  # comfortably beyond MATCH_DISTANCE


def _hashes(data: bytes) -> ImageHashes:
    return image_hashes(decode_image(data, **GENEROUS), data)


def _png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


# ---- reference vectors -------------------------------------------------------------------------------

def _phash_vectors() -> list[tuple[str, str]]:
    with open(IMAGEHASH_VECTORS / "expected_hashes.csv", newline="") as f:
        return [(row["image"], row["expected"]) for row in csv.DictReader(f) if row["function"] == "phash"]


def test_the_reference_vectors_include_phash():
    assert _phash_vectors(), "expected_hashes.csv lists no phash vector: the next test would prove nothing"


@pytest.mark.parametrize("image_name, expected", _phash_vectors())
def test_phash_reproduces_imagehash_published_value(image_name, expected):
    data = (IMAGEHASH_VECTORS / image_name).read_bytes()
    hashes = _hashes(data)
    assert hashes.phash == expected
    assert hashes.sha256 == hashlib.sha256(data).hexdigest()


# ---- re-uploads near, unrelated images far ---------------------------------------------------------------

@pytest.fixture(scope="module")
def bank() -> list[ImageHashes]:
    return blocklist_hashes(seed=5)


@pytest.mark.parametrize("edit", IMAGE_EDITS)
def test_edited_reuploads_of_a_banked_image_match_it(bank, edit):
    assert set(EDITED_MAX_DISTANCE) == set(IMAGE_EDITS)
    rng = random.Random(edit)
    bank_phashes = [hashes.phash for hashes in bank]
    for index, original in enumerate(blocklist_images(seed=5)):
        data, _ = edited_reupload(original, edit, rng)
        reupload = _hashes(data)
        assert hamming(reupload.phash, bank[index].phash) <= EDITED_MAX_DISTANCE[edit], index
        assert match_bank(reupload.phash, bank_phashes, MATCH_DISTANCE)[0] == bank[index].phash
        assert (reupload.sha256 == bank[index].sha256) == (edit == "exact")


def test_unrelated_generated_images_are_far_apart():
    rng = np.random.default_rng(2024)
    phashes = [_hashes(encode_image(procedural_image(rng), "PNG")).phash for _ in range(40)]
    distances = [hamming(a, b) for a, b in itertools.combinations(phashes, 2)]
    assert min(distances) >= UNRELATED_MIN_DISTANCE
    assert 28 <= float(np.median(distances)) <= 36  # about half of 64 bits: no shared structure


def test_unrelated_images_do_not_match_the_bank(bank):
    rng = np.random.default_rng(77)
    bank_phashes = [hashes.phash for hashes in bank]
    for _ in range(20):
        phash = _hashes(encode_image(procedural_image(rng), "JPEG")).phash
        assert match_bank(phash, bank_phashes, MATCH_DISTANCE) is None


# ---- rejections -----------------------------------------------------------------------------------------

def _with_declared_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR claiming another size (CRC fixed): a decompression bomb's header."""
    ihdr_start = 8 + 4  # signature, then the chunk's length
    body = b"IHDR" + struct.pack(">II", width, height) + png[ihdr_start + 12: ihdr_start + 17]
    return png[:ihdr_start] + body + struct.pack(">I", zlib.crc32(body)) + png[ihdr_start + 21:]


def _tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "TIFF")
    return buffer.getvalue()


SMALL_PNG = _png(Image.new("RGB", (32, 32), "blue"))
SMALL_JPEG = encode_image(Image.new("RGB", (64, 64), "green"), "JPEG")


@pytest.mark.parametrize("data, max_bytes, max_pixels, reason", [
    (b"", 1000, 1000, "empty"),
    (SMALL_PNG, len(SMALL_PNG) - 1, 10_000, "too_many_bytes"),
    (_tiff(), 100_000, 10_000, "format_not_allowed"),
    (b"GIF87a but not really" * 3, 100_000, 10_000, "undecodable"),
    (b"%PDF-1.4 not an image at all", 100_000, 10_000, "format_not_allowed"),
    (bytes(range(256)) * 4, 100_000, 10_000, "format_not_allowed"),
    (SMALL_PNG, 100_000, 32 * 32 - 1, "too_many_pixels"),
    # A header claiming 20,000 x 20,000 over a 32 x 32 body: rejected on the header, never decoded
    # (decoding it would fail as "undecodable"), and beyond PIL's own bomb limit as well.
    (_with_declared_size(SMALL_PNG, 20_000, 20_000), 100_000, 1_000_000, "too_many_pixels"),
    (_with_declared_size(SMALL_PNG, 3_000, 3_000), 100_000, 1_000_000, "too_many_pixels"),
    (SMALL_PNG[: len(SMALL_PNG) // 2], 100_000, 10_000, "undecodable"),
    (SMALL_JPEG[: len(SMALL_JPEG) - 200], 100_000, 10_000, "undecodable"),
    (_with_declared_size(SMALL_PNG, 64, 64), 100_000, 10_000, "undecodable"),
])
def test_rejections_say_why(data, max_bytes, max_pixels, reason):
    with pytest.raises(ImageRejected) as rejected:
        decode_image(data, max_bytes, max_pixels)
    assert rejected.value.reason == reason


def test_callers_cannot_lift_the_pixel_limit_above_the_ceiling():
    with pytest.raises(ValueError):
        decode_image(SMALL_PNG, 100_000, PIXEL_CEILING + 1)


def test_pil_bomb_limit_is_set():
    assert Image.MAX_IMAGE_PIXELS == PIXEL_CEILING


# ---- normalisation ---------------------------------------------------------------------------------------

def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue(), **GENEROUS).size == (20, 40)


def test_the_first_frame_of_an_animation_is_taken():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode_image(buffer.getvalue(), **GENEROUS)
    assert decoded.mode == "RGB"
    red, green, blue = decoded.getpixel((8, 8))
    assert red > 200 and blue < 50


def test_alpha_is_flattened_onto_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    decoded = decode_image(_png(image), **GENEROUS)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((4, 4)) == (255, 255, 255)
    assert decoded.getpixel((0, 0)) == (255, 0, 0)


def test_palette_transparency_is_flattened_onto_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    decoded = decode_image(_png(image, transparency=0), **GENEROUS)
    assert decoded.getpixel((4, 4)) == (255, 255, 255)
    assert decoded.getpixel((0, 0)) == (0, 255, 0)


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "LA", "I;16"])
def test_every_mode_comes_out_rgb(mode):
    image = Image.new(mode, (8, 8))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    assert decode_image(buffer.getvalue(), **GENEROUS).mode == "RGB"


# ---- hamming and the reference bank scan -----------------------------------------------------------------

@pytest.mark.parametrize("a, b, distance", [
    ("0000000000000000", "0000000000000000", 0),
    ("0000000000000000", "ffffffffffffffff", 64),
    ("ba8c84536bd3c366", "ba8c84536bd3c367", 1),
    ("f0f0f0f0f0f0f0f0", "0f0f0f0f0f0f0f0f", 64),
    ("8000000000000001", "0000000000000000", 2),
])
def test_hamming(a, b, distance):
    assert hamming(a, b) == distance
    assert hamming(b, a) == distance


def test_hamming_refuses_hashes_of_different_lengths():
    with pytest.raises(ValueError):
        hamming("ff", "ffff")


def test_match_bank_finds_the_closest_within_the_limit():
    bank = {"0000000000000000": "far", "00000000000000ff": "near", "000000000000ffff": "farther"}
    assert match_bank("000000000000007f", bank, 4) == ("00000000000000ff", 1)
    assert match_bank("000000000000007f", list(bank), 4) == ("00000000000000ff", 1)
    assert match_bank("000000000000007f", bank, 0) is None
    assert match_bank("000000000000007f", [], 64) is None


def test_match_bank_breaks_ties_by_the_smallest_hash():
    # Both bank hashes are 1 bit from the query: the smaller one wins, whatever the order given.
    bank = ["0000000000000003", "0000000000000000"]
    assert match_bank("0000000000000001", bank, 8) == ("0000000000000000", 1)
    assert match_bank("0000000000000001", list(reversed(bank)), 8) == ("0000000000000000", 1)


# ---- PDQ against ThreatExchange's published hashes --------------------------------------------------------

PDQ_VECTORS = PROJECT_ROOT.parent / "shared" / "data" / "reference-vectors" / "pdq-threatexchange"


def _pdq_vectors() -> list[tuple[str, str, str]]:
    with open(PDQ_VECTORS / "expected_pdq_exact.csv", newline="") as f:
        return [(row["file"], row["expected_pdq_hex"], row["expected_quality"]) for row in csv.DictReader(f)]


def test_the_reference_vectors_include_pdq():
    assert len(_pdq_vectors()) == 17


@pytest.mark.parametrize("image_name, expected, quality", _pdq_vectors())
def test_pdq_reproduces_threatexchange_published_value(image_name, expected, quality):
    data = (PDQ_VECTORS / image_name).read_bytes()
    if image_name.endswith("LA.png"):
        # ThreatExchange's recipe drops the alpha channel; upload decoding flattens it onto white, which
        # moves this image's PDQ 60 bits: transparent banked images must be hashed with Lifeguard's decoder.
        assert pdq_hash(Image.open(io.BytesIO(data)).convert("RGB")) == (expected, int(quality))
        return
    hashes = _hashes(data)
    assert hashes.pdq == expected
    if quality:
        assert hashes.pdq_quality == int(quality)


def test_pdq_quality_flags_flat_and_tiny_images():
    with open(PDQ_VECTORS / "computed_pdqhash_0.2.8.csv", newline="") as f:
        computed = {row["file"]: int(row["quality"]) for row in csv.DictReader(f)}
    for name in ("misc-images/small.jpg", "labelme-subset/q0003.jpg", "labelme-subset/q0004.jpg"):
        assert _hashes((PDQ_VECTORS / name).read_bytes()).pdq_quality == computed[name] < 50


def test_pdq_stays_within_16_bits_of_other_implementations():
    with open(PDQ_VECTORS / "expected_pdq_cross_impl.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        assert hamming(_hashes((PDQ_VECTORS / row["file"]).read_bytes()).pdq, row["reference_pdq_hex"]) <= 16, row


# ---- animations and URIs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("walkable, frames, expected", [
    (1, 4, [0]), (3, 4, [0, 1, 2]), (10, 4, [0, 3, 6, 9]), (FRAME_SCAN_LIMIT, 4, [0, 21, 42, 63]), (7, 1, [0])])
def test_animation_frames_are_sampled_evenly_over_the_walkable_ones(walkable, frames, expected):
    assert _sampled_frames(walkable, frames) == expected


def test_decode_frames_returns_the_first_and_sampled_frames():
    colours = ("red", "green", "blue", "yellow", "white", "black", "purple")
    frames = [Image.new("RGB", (16, 16), colour) for colour in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode_frames(buffer.getvalue(), **GENEROUS, frames=3)
    assert [f.getpixel((8, 8)) for f in decoded] == [(255, 0, 0), (255, 255, 0), (128, 0, 128)]


def test_a_long_animation_is_sampled_within_its_first_frames_only():
    """Frames past FRAME_SCAN_LIMIT are never walked: the last frame returned is the limit's."""
    count = FRAME_SCAN_LIMIT + 36
    frames = [Image.new("L", (8, 8), 255 if i == FRAME_SCAN_LIMIT - 1 else i % 200) for i in range(count)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_frames(buffer.getvalue(), **GENEROUS, frames=2)
    assert len(decoded) == 2 and decoded[-1].getpixel((4, 4)) == (255, 255, 255)


def test_read_uri_reads_at_most_one_byte_past_the_cap(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 1000)
    assert len(read_uri(str(path), 100, [tmp_path])) == 101
    assert read_uri(f"file://{path}", 5000, [tmp_path]) == b"x" * 1000


@pytest.mark.parametrize("uri, reason", [
    ("http://example.com/a.png", "uri_scheme_not_allowed"),
    ("ftp://example.com/a.png", "uri_scheme_not_allowed"),
    ("s3://bucket/a.png", "uri_store_unavailable"),
    ("/uploads/no/such/file.png", "uri_unreadable"),
    ("/uploads", "uri_unreadable"),                      # a folder, not a file
    ("file:///proc/self/environ", "uri_outside_roots"),  # the job's own secrets (issue 13)
    ("/uploads/../etc/passwd", "uri_outside_roots"),     # a way out of the folder
    ("/etc/passwd", "uri_outside_roots"),
])
def test_unreadable_uris_say_why(uri, reason, tmp_path):
    root = tmp_path / "uploads"
    root.mkdir()
    with pytest.raises(ImageRejected) as rejected:
        read_uri(uri.replace("/uploads", str(root)), 1000, [root])
    assert rejected.value.reason == reason


def test_a_fifo_in_the_upload_folder_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageRejected, match="not a regular file"):
        read_uri(str(fifo), 1000, [tmp_path])


def test_no_local_path_is_read_when_no_upload_folder_is_configured(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(ImageRejected) as rejected:
        read_uri(str(path), 1000)
    assert rejected.value.reason == "uri_outside_roots" and "none configured" in rejected.value.detail


def _gif_with_frame_size(first: tuple[int, int], later: tuple[int, int]) -> bytes:
    """A two-frame GIF whose header (and first frame) says ``first`` and whose second frame's descriptor
    claims ``later``: PIL enlarges the canvas when it reaches that frame (the pixel data stays tiny)."""
    frames = [Image.new("RGB", first, colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = buffer.getvalue()
    descriptor = b"," + struct.pack("<4H", 0, 0, *first)
    second = data.index(descriptor, data.index(descriptor) + 1)
    return data[:second] + b"," + struct.pack("<4H", 0, 0, *later) + data[second + 9:]


def test_a_later_gif_frame_larger_than_the_limit_is_refused_before_it_is_decoded():
    hostile = _gif_with_frame_size((16, 16), (5_000, 5_000))
    assert Image.open(io.BytesIO(hostile)).size == (16, 16)  # the header passes the pixel check
    with pytest.raises(ImageRejected) as rejected:
        decode_frames(hostile, 100_000, 1_000_000)
    assert rejected.value.reason == "too_many_pixels" and "frame 1 enlarges the canvas to 5000x5000" in rejected.value.detail


def test_a_large_animation_walks_only_the_frames_its_pixel_budget_allows():
    colours = ("red", "green", "blue", "yellow", "white", "black", "purple", "orange")
    frames = [Image.new("RGB", (16, 16), colour) for colour in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    # 16 x 16 = 256 pixels a frame: a budget of 3 frames' pixels samples within the first three.
    decoded = decode_frames(buffer.getvalue(), 100_000, 3 * 256, frames=4)
    assert [f.getpixel((8, 8)) for f in decoded] == [(255, 0, 0), (0, 128, 0), (0, 0, 255)]


class _Store(AbstractFileSystem):
    """An object store (gs://) whose reads take ``delay_s``; fsspec finds it by the scheme."""

    protocol = "gs"
    delay_s = 0.0

    def _open(self, path, mode="rb", **kwargs):
        time.sleep(self.delay_s)
        return io.BytesIO(b"bytes of " + path.encode())


@pytest.mark.parametrize("delay_s, outcome", [(0.0, b"bytes of bucket/a.png"), (3.0, "did not answer within 0.5 s")])
def test_an_object_store_read_is_bounded_by_the_timeout(monkeypatch, delay_s, outcome):
    monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, "gs", type("Store", (_Store,), {"delay_s": delay_s}))
    started = time.monotonic()
    if isinstance(outcome, bytes):
        assert read_uri("gs://bucket/a.png", 1000, timeout_s=0.5) == outcome
        return
    with pytest.raises(ImageRejected) as rejected:
        read_uri("gs://bucket/a.png", 1000, timeout_s=0.5)
    assert rejected.value.reason == "uri_unreadable" and outcome in rejected.value.detail
    assert time.monotonic() - started < delay_s  # refused at the deadline, not when the store answered
