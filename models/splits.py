"""The one train/validation/test split of every text data set, by a stable hash of the text.

Hashing the normalised text (rather than shuffling rows) keeps duplicates on one side and makes the
split reproducible everywhere: training, calibration, evaluation and the simulator (which draws its
harmful messages only from the test split, so the demo's catch rate is not measured on training text).
"""
from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "val", "test"]


def split_of(text: str) -> Split:
    key = " ".join(text.lower().split()).encode("utf-8", "surrogatepass")
    bucket = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") % 100
    if bucket < 70:
        return "train"
    return "val" if bucket < 85 else "test"
