"""Turns texts into the hashed character n-gram features the linear text model reads.

Training and the runtime share this module, and the featurizer's parameters travel inside the model
file (metadata ``featurizer``), so the two can never disagree. Texts are normalised first
(`udfs.normalize`), so "sh1t", "ｓｈｉｔ" and "s h i t" produce the same features.

The model's ONNX graph takes a batch as two padded matrices rather than a sparse tensor, because
every ONNX runtime supports Gather on dense inputs:

    ids      int64[N, L]    hashed column of each n-gram present in the text (padding: 0)
    weights  float32[N, L]  its l2-normalised count (padding: 0, so padding adds nothing)

where L is the largest number of distinct n-grams of any text in the batch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

from udfs.normalize import normalize


@dataclass(frozen=True)
class FeaturizerParams:
    """HashingVectorizer settings. No defaults: the runtime takes them from the model file, and
    training chooses them (models.train_text.FEATURIZER)."""

    n_features: int
    ngram_range: tuple[int, int]
    # "char_wb" pads each word with spaces, so n-grams mark word starts and ends ("kill" vs "skill").
    analyzer: Literal["char", "char_wb"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> "FeaturizerParams":
        """Reads the parameters stored in a model file; unknown or missing keys fail loudly."""
        stored = json.loads(raw)
        unknown = set(stored) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"unknown featurizer parameters: {sorted(unknown)}")
        return cls(
            n_features=int(stored["n_features"]),
            ngram_range=tuple(stored["ngram_range"]),
            analyzer=stored["analyzer"],
        )


@lru_cache(maxsize=4)
def _vectorizer(params: FeaturizerParams) -> HashingVectorizer:
    return HashingVectorizer(
        n_features=params.n_features,
        ngram_range=params.ngram_range,
        analyzer=params.analyzer,
        lowercase=False,  # normalize() has already case-folded
        alternate_sign=False,
        norm="l2",
        dtype=np.float32,
    )


def vectorize(texts: Sequence[str], params: FeaturizerParams) -> sparse.csr_matrix:
    """Normalised texts as a sparse float32 matrix [N, n_features]: what training fits on."""
    return _vectorizer(params).transform([normalize(text) for text in texts])


def featurize(texts: Sequence[str], params: FeaturizerParams) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs for a batch: ids int64[N, L] and weights float32[N, L] (see module doc)."""
    return pad_rows(vectorize(texts, params))


def pad_rows(matrix: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nonzero columns and values, left-aligned and padded to the longest row.

    L is at least 1 so that a batch of empty texts still has a valid shape.
    """
    counts = np.diff(matrix.indptr)
    width = max(1, int(counts.max(initial=0)))
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    # Position of each stored value within its row: its index minus where the row starts.
    positions = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    ids = np.zeros((matrix.shape[0], width), dtype=np.int64)
    weights = np.zeros((matrix.shape[0], width), dtype=np.float32)
    ids[rows, positions] = matrix.indices
    weights[rows, positions] = matrix.data
    return ids, weights
