"""MiniLM sentence embeddings of the labelled texts, cached under models/build/embeddings/.

Embedding some 37,000 texts takes a few minutes on 2 cores; training the second stage reads them many
times. The cache file of a data set is keyed by the encoder's version and a hash of the exact texts
in order, so any change to the data, the reader or the encoder gives a new file, never a stale one.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from lifeguard import PROJECT_ROOT
from udfs.sentence_encoder import SentenceEncoder

DEFAULT_CACHE = PROJECT_ROOT / "models" / "build" / "embeddings"
# Texts are embedded shortest first, so that each batch pads to a similar length (three times faster
# than file order on this data).
EMBEDDING_BATCH = 64


def cached_embeddings(encoder: SentenceEncoder, name: str, texts: Sequence[str],
                      cache: Path = DEFAULT_CACHE) -> np.ndarray:
    """float32[len(texts), 384] for `texts`, read from the cache or computed and written to it."""
    digest = hashlib.sha256("\x1e".join([encoder.version, *texts]).encode("utf-8", "surrogatepass")).hexdigest()
    path = cache / f"{name}-{digest[:16]}.npy"
    if path.is_file():
        return np.load(path)
    vectors = embed_by_length(encoder, texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def embed_by_length(encoder: SentenceEncoder, texts: Sequence[str]) -> np.ndarray:
    """Embeds `texts` in batches of similar length and returns the rows in the original order."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    vectors = np.zeros((len(texts), 384), dtype=np.float32)
    for start in range(0, len(texts), EMBEDDING_BATCH):
        chosen = order[start:start + EMBEDDING_BATCH]
        vectors[chosen] = encoder.embed([texts[i] for i in chosen])
    return vectors
