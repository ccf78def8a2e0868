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


def cached_embeddings(encoder: SentenceEncoder, name: str, texts: Sequence[str],
                      cache: Path = DEFAULT_CACHE) -> np.ndarray:
    """float32[len(texts), 384] for `texts`, read from the cache or computed and written to it."""
    digest = hashlib.sha256("\x1e".join([encoder.version, *texts]).encode("utf-8", "surrogatepass")).hexdigest()
    path = cache / f"{name}-{digest[:16]}.npy"
    if path.is_file():
        return np.load(path)
    # The encoder runs each batch by length (udfs.sentence_encoder.run_by_length), so one call suffices.
    vectors = encoder.embed(list(texts))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors
