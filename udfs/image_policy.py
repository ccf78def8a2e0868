"""The policy's image section, on its own so the image tier can grow it without touching the rest.

Which banks block, review or allow, and how near a hash must be to count, are policy (reviewed,
versioned, changed through policy-updates); what each bank holds is data (the banks file and the
hash-bank-updates topic).
"""
from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifeguard.schemas import AgeBand

PerceptualSignal = Literal["phash", "pdq"]
SIGNAL_BITS: dict[str, int] = {"phash": 64, "pdq": 256}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BankKind(str, Enum):
    BLOCK = "block"  # known harmful: a match blocks, a near miss goes to review
    REVIEW = "review"  # suspected: a match or near miss goes to review
    ALLOW = "allow"  # known benign look-alikes (a negative bank): a match suppresses every bank's block


class Distances(_Strict):
    """Hamming distances in bits: a hash within ``match`` bits matches the bank; within ``near`` bits
    (and beyond ``match``) it is a near miss, which a block or review bank sends to review."""

    match: int = Field(ge=0, le=256)
    near: int = Field(ge=0, le=256)

    @model_validator(mode="after")
    def _near_not_below_match(self):
        if self.near < self.match:
            raise ValueError(f"near ({self.near}) must be at least match ({self.match})")
        return self


class BankPolicy(_Strict):
    kind: BankKind = BankKind.BLOCK
    # Overrides of the default distances, per signal type: a shared list with a history of false matches
    # can be held to a tighter distance than the platform's own.
    distances: dict[PerceptualSignal, Distances] = {}
    # False for a bank of confirmed cases (a known-bad list such as a hotline's): its matches are never a
    # meme's false match, so a flood of them is an attack or a spreading image, blocked all the same.
    flood_quarantine: bool = True


class FloodControl(_Strict):
    """A bank hash matched by far more senders than usual is quarantined: its matches go to review
    instead of block, so one bad entry (a meme hashed into a shared list) cannot block a flood of
    innocent uploads. Counted per bank hash as distinct senders in windows of ``window_s`` (one sender
    re-uploading an image is one, so nobody can quarantine a hash alone); the usual rate is an
    exponentially weighted mean of past windows' counts, at least ``usual_floor``. Exact SHA-256 matches
    and banks with ``flood_quarantine`` false are never quarantined."""

    window_s: int = Field(300, ge=1)
    smoothing: float = Field(0.1, gt=0, le=1)  # weight of the latest window in the usual rate
    usual_floor: float = Field(1.0, gt=0)
    spike_factor: float = Field(20.0, gt=1)  # matches in a window above factor x usual rate: a spike...
    min_matches: int = Field(20, ge=1)  # ...and at least this many senders
    quarantine_s: int = Field(3600, ge=1)


class ModelThresholds(_Strict):
    """Model score at or above which an action applies; None: never."""

    review: float | None = Field(None, ge=0, le=1)
    block: float | None = Field(None, ge=0, le=1)


def _default_nudity() -> dict[AgeBand, ModelThresholds]:
    # open_nsfw's own guidance: below 0.2 safe, above 0.8 very likely NSFW. A child's audience is blocked
    # sooner; for adults among themselves only clear cases are reviewed.
    minor = ModelThresholds(review=0.4, block=0.8)
    return {AgeBand.UNDER_13: minor, AgeBand.TEEN_13_15: minor, AgeBand.TEEN_16_17: minor,
            AgeBand.ADULT: ModelThresholds(review=0.8)}


class ImagePolicy(_Strict):
    distances: dict[PerceptualSignal, Distances] = {
        # pHash (64 bits): edited re-uploads land 0-12 bits away, unrelated images 16 and more.
        "phash": Distances(match=6, near=10),
        # PDQ (256 bits): 31 is ThreatExchange's confident-match threshold; unrelated images land ~100+.
        "pdq": Distances(match=31, near=45),
    }
    # Banks not listed here are block banks with the default distances.
    banks: dict[str, BankPolicy] = {}
    # PDQ hashes of lower quality (flat, tiny or blank images) are not matched, as ThreatExchange does.
    pdq_min_quality: int = Field(50, ge=0, le=100)
    flood: FloodControl = FloodControl()
    # Image model scores per category (only categories with a model: see udfs.image_model) and age band.
    models: dict[str, dict[AgeBand, ModelThresholds]] = {"nudity": _default_nudity()}

    @model_validator(mode="after")
    def _valid(self):
        if missing := set(SIGNAL_BITS) - set(self.distances):
            raise ValueError(f"distances lacks {sorted(missing)}")
        for kind, table in (("distances", self.distances),
                            *((f"banks.{name}.distances", bank.distances) for name, bank in self.banks.items())):
            for signal, distances in table.items():
                if distances.near > SIGNAL_BITS[signal]:
                    raise ValueError(f"{kind}.{signal}.near is above {SIGNAL_BITS[signal]} bits")
        for category, bands in self.models.items():
            if missing := set(AgeBand) - set(bands):
                raise ValueError(f"models.{category} lacks bands {sorted(b.value for b in missing)}")
        return self

    def bank(self, name: str) -> BankPolicy:
        return self.banks.get(name, BankPolicy())

    def distances_for(self, bank: str, signal: str) -> Distances:
        return self.bank(bank).distances.get(signal) or self.distances[signal]

    def widest(self, signal: str) -> int:
        """The largest near-miss distance any bank uses for ``signal``: how far the index must look."""
        return max([self.distances[signal].near]
                   + [b.distances[signal].near for b in self.banks.values() if signal in b.distances])
