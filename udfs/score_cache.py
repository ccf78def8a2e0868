"""Repeats are free: game chat says "gg", "lol" and "ty" over and over, so a bounded cache of what the text
model scored spares it a second run. It keeps scores only, never decisions: a decision depends on the
parties (age bands, contact settings, behaviour), and the policy applies them to the cached scores afresh.

A text's scores depend on the text as written (stage 1 and the frozen encoder read it before any
normalisation) and on whether a minor is involved (which moves the cascade's bounds), so both are the key:
the text as a 16-byte digest, so the cache keeps no message text and its size does not grow with long
messages. The uncached model is the reference this agrees with (tests/test_text_model.py).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Mapping, Sequence

from udfs.text_model import ScoredTexts, TextModel


class ScoreCache:
    """`TextModel.score_and_embed` behind a least-recently-used cache of `size` texts (0: no cache)."""

    def __init__(self, model: TextModel, size: int):
        self.model, self.size = model, size
        self._scores: OrderedDict[tuple[bytes, bool], Mapping[str, float]] = OrderedDict()
        self.lookups = 0  # rows that could be answered from the cache
        self.hits = 0

    def score_and_embed(self, texts: Sequence[str], minor_involved: Sequence[bool],
                        embedding_wanted: Sequence[bool]) -> ScoredTexts:
        """As the model's, but embeddings only for the rows where one is wanted: such a row always goes to the
        model (embeddings are not kept), and its scores are kept like any other row's. Repeats within the
        batch run once."""
        keys = [(_digest(text), bool(minor)) for text, minor in zip(texts, minor_involved)]
        scores: list[Mapping[str, float] | None] = [None] * len(texts)
        to_run: dict[tuple[bytes, bool], int] = {}  # key -> row of the model's batch
        rows: list[int] = []  # the rows sent to the model, in its batch's order
        for i, key in enumerate(keys):
            if embedding_wanted[i]:
                rows.append(i)
                continue
            self.lookups += 1
            if (cached := self._get(key)) is not None:
                self.hits += 1
                scores[i] = cached
            elif key not in to_run:
                to_run[key] = len(rows)
                rows.append(i)
        scored = self.model.score_and_embed([texts[i] for i in rows], [minor_involved[i] for i in rows],
                                            [embedding_wanted[i] for i in rows]) if rows else ScoredTexts([], [])
        embeddings = [None] * len(texts)
        for position, i in enumerate(rows):
            scores[i], embeddings[i] = scored.scores[position], scored.embeddings[position]
            self._put(keys[i], scored.scores[position])
        for i, key in enumerate(keys):  # a repeat of a row run in this batch
            if scores[i] is None:
                scores[i] = scored.scores[to_run[key]]
                self.hits += 1
        return ScoredTexts(scores, embeddings)

    def _get(self, key: tuple[bytes, bool]) -> Mapping[str, float] | None:
        found = self._scores.get(key)
        if found is not None:
            self._scores.move_to_end(key)
        return found

    def _put(self, key: tuple[bytes, bool], scores: Mapping[str, float]) -> None:
        if self.size <= 0:
            return
        self._scores[key] = scores
        self._scores.move_to_end(key)
        while len(self._scores) > self.size:
            self._scores.popitem(last=False)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
