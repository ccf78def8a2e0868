"""`lifeguard bench images`: images/s through the image tier, and PDQ look-ups at scale next to
python-threatexchange's index, in one run.

- Tier: generated pictures and the reference-vector photos, screened in batches through ``ImageTier``
  with the simulator's block bank: once with hashes and banks only, once with the image model too.
- Index: N random 256-bit PDQ hashes (numpy, seeded); queries are stored hashes with 31 bits flipped
  (ThreatExchange's own benchmark, ``reference-vectors/pdq-threatexchange/README.md``), matched within 31
  bits. Lifeguard's ``HashIndex`` and python-threatexchange's ``PDQIndex`` (faiss multi-hash, 16 chunks)
  get the same hashes and queries, each in its own child process so that its memory is its own: build
  time, resident memory added by the build, look-ups/s one query at a time (the per-upload path) and as
  one batch, and recall against an exhaustive scan (faiss ``IndexBinaryFlat``).
"""
from __future__ import annotations

import base64
import multiprocessing
import time
from dataclasses import dataclass

import faiss
import numpy as np
import psutil
from tabulate import tabulate

from lifeguard import PROJECT_ROOT
from lifeguard.config import LifeguardConfig
from lifeguard.schemas import AgeBand, Upload
from tools.simulator import blocklist_hashes, encode_image, procedural_image
from udfs.hash_index import HashIndex
from udfs.image_model import ImageModel
from udfs.image_tier import Banks, ImageTier
from udfs.policy import load_policy

FLIPPED_BITS = 31
THRESHOLD = 31
PHOTOS = PROJECT_ROOT.parent / "shared" / "data" / "reference-vectors" / "pdq-threatexchange"


# ---- the tier --------------------------------------------------------------------------------------

def _bench_uploads(count: int) -> list[Upload]:
    rng = np.random.default_rng(7)
    photos = [p.read_bytes() for p in sorted(PHOTOS.glob("*/*.jp*g"))] if PHOTOS.exists() else []
    images = photos + [encode_image(procedural_image(rng), "JPEG") for _ in range(max(count - len(photos), 0))]
    return [Upload(schema_version=1, event_id=f"b{i}", ts=0, user_id="u", room_id="r", content_type="image/jpeg",
                   image_b64=base64.b64encode(data).decode()) for i, data in enumerate(images[:count])]


def tier_images_per_s(cfg: LifeguardConfig, count: int, batch: int) -> list[list]:
    banks = Banks()
    banks.add("block", "phash", [h.phash for h in blocklist_hashes(seed=5)])
    banks.add("block", "pdq", [h.pdq for h in blocklist_hashes(seed=5)])
    policy = load_policy(cfg.path(cfg.policy)).images
    limits = cfg.limits.model_copy(update={"max_image_bytes": 10_000_000})
    uploads = _bench_uploads(count)
    rows = []
    for label, model in (("hashes + banks", None), ("hashes + banks + open_nsfw", ImageModel.load(cfg.models.prefer_gpu))):
        tier = ImageTier(banks, limits, model)
        tier.screen(uploads[:batch], policy, [AgeBand.UNDER_13] * batch)  # warm-up
        start = time.perf_counter()
        for i in range(0, len(uploads), batch):
            chunk = uploads[i: i + batch]
            tier.screen(chunk, policy, [AgeBand.UNDER_13] * len(chunk))
        elapsed = time.perf_counter() - start
        rows.append([label, len(uploads), batch, round(len(uploads) / elapsed, 1)])
    return rows


# ---- the index -------------------------------------------------------------------------------------

def _stored_and_queries(size: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored codes, query codes, index of each query's source) for a size, the same in every process."""
    rng = np.random.default_rng(size)
    stored = rng.integers(0, 256, (size, 32), dtype=np.uint8)
    sources = rng.choice(size, queries, replace=False)
    bits = np.unpackbits(stored[sources], axis=1)
    for row in bits:
        row[rng.choice(256, FLIPPED_BITS, replace=False)] ^= 1
    return stored, np.packbits(bits, axis=1), sources


def _exhaustive(size: int, queries: int) -> list[set[bytes]]:
    stored, query_codes, _ = _stored_and_queries(size, queries)
    flat = faiss.IndexBinaryFlat(256)
    flat.add(stored)
    lims, _, ids = flat.range_search(query_codes, THRESHOLD + 1)
    return [{stored[i].tobytes() for i in ids[lims[q]: lims[q + 1]]} for q in range(queries)]


@dataclass(frozen=True)
class IndexFigures:
    index: str
    size: int
    build_s: float
    memory_mb: float
    single_per_s: float
    batch_per_s: float
    found: list[set[bytes]]


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _lifeguard_index(size: int, queries: int) -> IndexFigures:
    stored, query_codes, _ = _stored_and_queries(size, queries)
    query_hex = [q.tobytes().hex() for q in query_codes]
    before, start = _rss(), time.perf_counter()
    index = HashIndex(256, 16)
    index.add_codes(stored, 0)
    build_s, memory = time.perf_counter() - start, _rss() - before
    start = time.perf_counter()
    found = [{bytes.fromhex(m.hash) for m in index.search(q, THRESHOLD, 1)} for q in query_hex]
    single = queries / (time.perf_counter() - start)
    start = time.perf_counter()
    index.search_codes(query_codes, THRESHOLD)
    batch = queries / (time.perf_counter() - start)
    return IndexFigures("lifeguard HashIndex (faiss multi-hash + member masks)", size, build_s, memory / 2**20,
                        single, batch, found)


def _threatexchange_index(size: int, queries: int) -> IndexFigures:
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex

    stored, query_codes, _ = _stored_and_queries(size, queries)
    stored_hex = [row.tobytes().hex() for row in stored]
    query_hex = [q.tobytes().hex() for q in query_codes]
    del stored
    before, start = _rss(), time.perf_counter()
    index = PDQIndex(entries=((h, i) for i, h in enumerate(stored_hex)))
    build_s, memory = time.perf_counter() - start, _rss() - before
    start = time.perf_counter()
    found = [{bytes.fromhex(stored_hex[m.metadata]) for m in index.query(q)} for q in query_hex]
    single = queries / (time.perf_counter() - start)
    start = time.perf_counter()
    index.index.search_with_distance_in_result(query_hex, THRESHOLD)
    batch = queries / (time.perf_counter() - start)
    return IndexFigures("python-threatexchange PDQIndex", size, build_s, memory / 2**20, single, batch, found)


def _in_child(function, *args):
    # spawn, not fork: the parent has faiss's OpenMP threads running, which a forked child can deadlock on
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def index_rows(sizes: list[int], queries: int) -> list[list]:
    rows = []
    for size in sizes:
        truth = _in_child(_exhaustive, size, queries)
        expected = sum(map(len, truth))
        for function in (_lifeguard_index, _threatexchange_index):
            figures: IndexFigures = _in_child(function, size, queries)
            recalled = sum(len(found & true) for found, true in zip(figures.found, truth))
            rows.append([figures.index, f"{size:,}", round(figures.build_s, 1), round(figures.memory_mb),
                         round(figures.single_per_s), round(figures.batch_per_s), f"{recalled / expected:.1%}"])
    return rows


def run_bench_images(cfg: LifeguardConfig, sizes: list[int], queries: int = 1000, images: int = 256,
                     batch: int = 32) -> str:
    tier = tabulate(tier_images_per_s(cfg, images, batch), headers=["image tier", "images", "batch", "images/s"])
    index = tabulate(index_rows(sizes, queries),
                     headers=["PDQ index", "hashes", "build s", "memory MB", "look-ups/s (one at a time)",
                              f"look-ups/s (batch of {queries})", "recall vs exhaustive"])
    return (f"{tier}\n\n{index}\n\nQueries: {queries} stored hashes with {FLIPPED_BITS} bits flipped, matched "
            f"within {THRESHOLD} bits; hashes are random 256-bit (seeded). Memory: resident set added by the "
            f"build, in a fresh process per index.")
