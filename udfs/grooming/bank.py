"""The contrastive message bank: known grooming messages and benign ones, and a message's nearest of each."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from udfs.grooming.settings import BENIGN, GROOMING, STAGES


@dataclass(frozen=True)
class BankExample:
    id: str
    label: str  # "grooming" or "benign"
    stage: str  # a key of STAGES for grooming; free text (the kind of chat) for benign
    text: str
    synthetic: bool
    source: str


def load_bank(paths: Iterable[Path]) -> list[BankExample]:
    """Every example of the bank files, in order. A file of a platform's confirmed cases uses the same
    JSON lines; a malformed line raises ``ValueError`` naming the file and line (the job must not start
    with a bank it half read)."""
    examples = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                example = BankExample(id=str(raw["id"]), label=raw["label"], stage=raw["stage"], text=raw["text"],
                                      synthetic=bool(raw["synthetic"]), source=raw.get("source", ""))


            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a bank example: {exc}") from None
            if example.label not in (GROOMING, BENIGN) or (example.label == GROOMING and example.stage not in STAGES):
                raise ValueError(f"{path}:{number}: label must be grooming (stage one of {sorted(STAGES)}) or benign")
            examples.append(example)
    return examples


@dataclass(frozen=True)
class BankMatch:
    contrast: float  # max cosine to grooming examples minus max cosine to benign ones
    nearest: BankExample  # the most similar grooming example


class MessageBank:
    """The bank's embeddings, computed once; ``match`` compares a batch of message embeddings with all
    of them in two matrix products (a few hundred examples: brute force is the fast path)."""

    def __init__(self, examples: Sequence[BankExample], embed: Callable[[Sequence[str]], np.ndarray]):
        self.grooming = [e for e in examples if e.label == GROOMING]
        benign = [e for e in examples if e.label == BENIGN]
        if not self.grooming or not benign:
            raise ValueError("the grooming bank needs both grooming and benign examples")
        self._grooming_vectors = embed([e.text for e in self.grooming])
        self._benign_vectors = embed([e.text for e in benign])

    def match(self, embeddings: np.ndarray) -> list[BankMatch]:
        """One match per row of ``embeddings`` (L2-normalised, as the bank's)."""
        to_grooming = embeddings @ self._grooming_vectors.T
        to_benign = embeddings @ self._benign_vectors.T
        nearest = to_grooming.argmax(axis=1)
        contrast = to_grooming.max(axis=1) - to_benign.max(axis=1)
        return [BankMatch(float(c), self.grooming[int(i)]) for c, i in zip(contrast, nearest)]
