"""The image tier for a batch of uploads: read, decode safely, hash, match the banks, then the model.

Cheapest first: SHA-256 and perceptual hashes (pHash, PDQ) of every sampled frame are matched against
the banks on the CPU; only uploads no bank blocked go through the image model, in one batched run.
Banks change while the job runs (``udfs.control.apply_bank_update`` calls ``Banks.add`` and friends);
the index takes each change at once, without a rebuild.
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from PIL import Image

from lifeguard.config import LimitsConfig
from lifeguard.schemas import Action, AgeBand, Upload
from udfs.hash_index import MAX_MEMBER_SETS, HashIndex
from udfs.image_model import UNMODELLED_CATEGORIES, ImageModel
from udfs.image_policy import SIGNAL_BITS, BankKind, FloodControl, ImagePolicy
from udfs.images import ImageHashes, ImageRejected, decode_frames, hamming, image_hashes, read_uri
from udfs.parse import Rejected
from udfs.policy import Signal

BANK_SIGNAL_TYPES = ("phash", "sha256", "pdq")
# Multi-index hashing chunks: 16-bit chunks keep each hash table's buckets small up to millions of hashes.
_INDEX_CHUNKS = {"phash": 4, "pdq": 16}
NO_MATCH_DISTANCE = 64  # the ``image_bank_distance`` score when no pHash or SHA-256 matched (pHash bits)


# ---- banks ---------------------------------------------------------------------------------------

@dataclass
class Bank:
    """A bank's content as plain sets: what ``Banks.snapshot`` returns, for tests and inspection."""

    phash: set[str] = field(default_factory=set)
    sha256: set[str] = field(default_factory=set)
    pdq: set[str] = field(default_factory=set)
    enabled: bool = True


@dataclass(frozen=True)
class BankMatch:
    bank: str
    signal_type: str  # sha256, phash or pdq
    hash: str  # the banked hash
    distance: int  # bits (0 for SHA-256)


class Banks:
    """Every named bank's hashes, in one index per perceptual signal type (a bank is a member bit) and a
    dict for SHA-256. A disabled bank keeps its hashes and matches nothing until it is enabled again. A
    hash may carry a note of where it came from (a reviewer's decision), which a match's reason quotes."""

    def __init__(self):
        self._numbers: dict[str, int] = {}  # bank name -> its member bit in the indexes
        self._enabled: dict[str, bool] = {}
        self._sha256: dict[str, set[str]] = {}  # digest -> banks holding it
        self._sha256_counts: dict[str, int] = {}  # bank -> digests it holds
        self._notes: dict[tuple[str, str, str], str] = {}  # (bank, signal type, hash) -> its provenance
        self._indexes = {signal: HashIndex(SIGNAL_BITS[signal], chunks) for signal, chunks in _INDEX_CHUNKS.items()}

    def __contains__(self, bank: str) -> bool:
        return bank in self._numbers

    def names(self) -> list[str]:
        return list(self._numbers)

    def ensure(self, bank: str) -> None:
        """Creates ``bank`` empty and enabled if it does not exist; ``ValueError`` past MAX_MEMBER_SETS banks."""
        if bank not in self._numbers:
            if len(self._numbers) >= MAX_MEMBER_SETS:
                raise ValueError(f"bank {bank!r} would be bank {MAX_MEMBER_SETS + 1}: at most {MAX_MEMBER_SETS}")
            self._numbers[bank] = len(self._numbers)
            self._enabled[bank] = True

    def add(self, bank: str, signal_type: str, hashes: list[str], note: str = "") -> None:
        self.ensure(bank)
        for hash_ in hashes:  # the latest add's note stands, as in the job's broadcast state
            if note:
                self._notes[bank, signal_type, hash_] = note
            else:
                self._notes.pop((bank, signal_type, hash_), None)
        if signal_type == "sha256":
            for digest in hashes:
                holders = self._sha256.setdefault(digest, set())
                if bank not in holders:
                    holders.add(bank)
                    self._sha256_counts[bank] = self._sha256_counts.get(bank, 0) + 1
        else:
            self._indexes[signal_type].add(hashes, self._numbers[bank])

    def remove(self, bank: str, signal_type: str, hashes: list[str]) -> None:
        self.ensure(bank)
        for hash_ in hashes:
            self._notes.pop((bank, signal_type, hash_), None)
        if signal_type == "sha256":
            for digest in hashes:
                holders = self._sha256.get(digest, set())
                if bank in holders:
                    holders.discard(bank)
                    self._sha256_counts[bank] -= 1
        else:
            self._indexes[signal_type].remove(hashes, self._numbers[bank])

    def size(self, bank: str) -> int:
        """Hashes ``bank`` holds, of every signal type (0 for an unknown bank)."""
        if bank not in self._numbers:
            return 0
        return self._sha256_counts.get(bank, 0) + sum(index.member_count(self._numbers[bank])
                                                      for index in self._indexes.values())

    def note(self, match: BankMatch) -> str:
        """Where the matched bank hash came from, if its update said ("" otherwise)."""
        return self._notes.get((match.bank, match.signal_type, match.hash), "")

    def set_enabled(self, bank: str, enabled: bool) -> None:
        self.ensure(bank)
        self._enabled[bank] = enabled

    def exact(self, digest: str) -> list[BankMatch]:
        return [BankMatch(bank, "sha256", digest, 0) for bank in sorted(self._sha256.get(digest, ()))
                if self._enabled[bank]]

    def near(self, signal_type: str, hash_hex: str, max_distance: int) -> list[BankMatch]:
        """Enabled banks' hashes within ``max_distance`` bits, nearest first."""
        enabled_mask = sum(1 << number for bank, number in self._numbers.items() if self._enabled[bank])
        return [BankMatch(bank, signal_type, match.hash, match.distance)
                for match in self._indexes[signal_type].search(hash_hex, max_distance, enabled_mask)
                for bank, number in self._numbers.items() if match.members >> number & 1 and self._enabled[bank]]

    def snapshot(self) -> dict[str, Bank]:
        banks = {name: Bank(enabled=self._enabled[name]) for name in self._numbers}
        for digest, holders in self._sha256.items():
            for name in holders:
                banks[name].sha256.add(digest)
        for signal_type, index in self._indexes.items():
            for code, members in zip(index.codes(), index.members):
                for name, number in self._numbers.items():
                    if int(members) >> number & 1:
                        getattr(banks[name], signal_type).add(code.tobytes().hex())
        return banks


def load_image_banks(path: Path) -> Banks:
    """Banks from a JSON-lines file of {"bank", "signal_type" (default phash), "hash"}; a missing file means
    no banked images yet. Hashes are added a bank and signal type at a time (one index add each)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                grouped.setdefault((entry["bank"], entry.get("signal_type", "phash")), []).append(entry["hash"].lower())
    banks = Banks()
    for (bank, signal_type), hashes in grouped.items():
        banks.add(bank, signal_type, hashes)
    return banks


# ---- flood control -------------------------------------------------------------------------------

@dataclass
class _Rate:
    window: int  # the window the count is for
    senders: set[str] = field(default_factory=set)  # distinct senders in that window
    usual: float = 0.0  # exponentially weighted mean of earlier windows' counts
    quarantined_until: float = 0.0


# Senders remembered per bank hash and window: far past any spike line, so the count stays exact where it
# matters while one hash's state stays bounded.
MAX_SENDERS_COUNTED = 10_000


class FloodGuard:
    """Counts the distinct senders of block matches per bank hash and quarantines a hash whose count in the
    current window is far above its usual rate (``FloodControl``). Plain logic with the clock passed in.
    State is per operator instance and not checkpointed: after a restart the usual rates are learnt again."""

    def __init__(self):
        self._rates: dict[BankMatch, _Rate] = {}

    def quarantine_note(self, match: BankMatch, sender: str, rules: FloodControl, now_s: float) -> str | None:
        """Records one match of ``match``'s bank hash by ``sender`` at ``now_s``; a note if the hash is quarantined."""
        window = int(now_s // rules.window_s)
        key = BankMatch(match.bank, match.signal_type, match.hash, 0)
        rate = self._rates.setdefault(key, _Rate(window))
        if window > rate.window:  # windows without matches count as zero
            rate.usual = _decayed(rate.usual, len(rate.senders), window - rate.window, rules.smoothing)
            rate.window, rate.senders = window, set()
        if len(rate.senders) < MAX_SENDERS_COUNTED:
            rate.senders.add(sender)
        count, usual = len(rate.senders), max(rate.usual, rules.usual_floor)
        if count >= rules.min_matches and count > rules.spike_factor * usual:
            rate.quarantined_until = max(rate.quarantined_until, now_s + rules.quarantine_s)
        if now_s < rate.quarantined_until:
            return (f"flood: {count} senders in {rules.window_s} s against a usual {usual:.1f}; quarantined "
                    f"until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(rate.quarantined_until))}")
        return None


def _decayed(usual: float, count: int, windows: int, smoothing: float) -> float:
    usual = (1 - smoothing) * usual + smoothing * count
    return usual * (1 - smoothing) ** (windows - 1)


# ---- the tier ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageResult:
    """What the tier found for one upload: the hashes of each sampled frame, the bank matches, model
    scores (empty when a bank decided or no model is loaded), and the signals and scores for the decision."""

    frames: list[ImageHashes]
    matches: list[BankMatch]
    model_scores: dict[str, float]
    signals: list[Signal]
    scores: dict[str, float]


@dataclass
class _Pending:
    frames: list[Image.Image]
    hashes: list[ImageHashes]
    matches: list[BankMatch]
    signals: list[Signal]


class ImageTier:
    def __init__(self, banks: Banks, limits: LimitsConfig, model: ImageModel | None = None,
                 clock: Callable[[], float] = time.time):
        self.banks = banks
        self.limits = limits
        self.model = model
        self.clock = clock
        self.flood = FloodGuard()


    def screen(self, uploads: Sequence[Upload], images: ImagePolicy,
               bands: Sequence[AgeBand]) -> list[ImageResult | Rejected]:
        """Each upload's result, or the ``Rejected`` that sends it to dead-letter; the model runs once for
        all the uploads no bank blocked."""
        pending: list[_Pending | Rejected] = []
        for upload in uploads:
            try:
                pending.append(self._match(upload, images))
            except Rejected as rejected:
                pending.append(rejected)
        undecided = [p for p in pending if isinstance(p, _Pending)
                     and not any(s.action is Action.BLOCK for s in p.signals)]
        model_scores = self._model_scores(undecided)
        return [item if isinstance(item, Rejected) else self._result(item, images, band, model_scores.get(id(item)))
                for item, band in zip(pending, bands)]

    # ---- reading and matching -----------------------------------------------------------------------

    def _image_bytes(self, upload: Upload) -> bytes:
        if upload.image_b64 is not None:
            try:
                return base64.b64decode(upload.image_b64, validate=True)
            except ValueError as exc:
                raise Rejected("unprocessable", f"image_b64 is not valid base64: {exc}", upload.event_id) from None
        return read_uri(upload.uri, self.limits.max_image_bytes, self.limits.upload_roots,
                        self.limits.upload_read_timeout_s)

    def _match(self, upload: Upload, images: ImagePolicy) -> _Pending:
        try:
            data = self._image_bytes(upload)
            frames = decode_frames(data, self.limits.max_image_bytes, self.limits.max_image_pixels)
        except ImageRejected as exc:
            raise Rejected("unprocessable", f"image rejected: {exc}", upload.event_id) from None
        hashes = [image_hashes(frame, data) for frame in frames]
        matches = self._bank_matches(hashes, images)
        return _Pending(frames, hashes, matches, self._bank_signals(hashes, matches, images, upload.user_id))

    def _bank_matches(self, frames: list[ImageHashes], images: ImagePolicy) -> list[BankMatch]:
        """Every bank hash within its bank's near-miss distance, once each (from its nearest frame)."""
        found = {(m.bank, m.signal_type, m.hash): m for m in self.banks.exact(frames[0].sha256)}
        for hashes in frames:
            candidates = self.banks.near("phash", hashes.phash, images.widest("phash"))
            if hashes.pdq_quality >= images.pdq_min_quality:
                candidates += self.banks.near("pdq", hashes.pdq, images.widest("pdq"))
            for match in candidates:
                key = (match.bank, match.signal_type, match.hash)
                if match.distance > images.distances_for(match.bank, match.signal_type).near:
                    continue
                if key not in found or match.distance < found[key].distance:
                    found[key] = match
        return sorted(found.values(), key=lambda m: (m.distance / SIGNAL_BITS.get(m.signal_type, 1), m.bank))

    def _bank_signals(self, frames: list[ImageHashes], matches: list[BankMatch], images: ImagePolicy,
                      sender: str) -> list[Signal]:
        signals, allowed_by = [], []
        for match in matches:
            kind = images.bank(match.bank).kind
            if match.signal_type == "sha256":
                within, what = True, f"image:sha256 {match.hash} in bank {match.bank}"
            else:
                within = match.distance <= images.distances_for(match.bank, match.signal_type).match
                upload_hash = min((getattr(h, match.signal_type) for h in frames), key=lambda h: hamming(h, match.hash))
                what = (f"image:{match.signal_type} {upload_hash} within {match.distance} bits of {match.hash} "
                        f"in bank {match.bank}")
            if kind is BankKind.ALLOW:
                if within:
                    allowed_by.append(match.bank)
                    signals.append(Signal("image_bank", Action.ALLOW, f"{what} (allow bank)", "image:bank"))
                continue
            action = Action.BLOCK if within and kind is BankKind.BLOCK else Action.REVIEW
            note = "match" if within else "near miss"
            if action is Action.BLOCK and match.signal_type != "sha256" and images.bank(match.bank).flood_quarantine:
                flood = self.flood.quarantine_note(match, sender, images.flood, self.clock())
                if flood:
                    action, note = Action.REVIEW, f"match, {flood}"
            provenance = self.banks.note(match)
            signals.append(Signal("image_bank", action, f"{what} ({kind.value} bank {note}"
                                                        f"{', ' + provenance if provenance else ''})", "image:bank"))
        if allowed_by:
            suppressed = f"; block suppressed by allow bank {', '.join(sorted(set(allowed_by)))}"
            signals = [replace(s, action=Action.ALLOW, reason=s.reason + suppressed) if s.action is Action.BLOCK else s
                       for s in signals]
        return signals

    # ---- the model ------------------------------------------------------------------------------------

    def _model_scores(self, undecided: list[_Pending]) -> dict[int, dict[str, float]]:
        """Per pending upload (by id), each category's highest score over its sampled frames."""
        if self.model is None or not undecided:
            return {}
        frames = [(id(p), frame) for p in undecided for frame in p.frames]
        scores: dict[int, dict[str, float]] = {}
        for (owner, _), frame_scores in zip(frames, self.model.score_batch([f for _, f in frames])):
            mine = scores.setdefault(owner, {})
            for category, score in frame_scores.items():
                mine[category] = max(score, mine.get(category, 0.0))
        return scores

    def _result(self, pending: _Pending, images: ImagePolicy, band: AgeBand,
                model_scores: dict[str, float] | None) -> ImageResult:
        signals = list(pending.signals)
        if model_scores is not None:
            signals += _model_signals(images, model_scores, band)
        elif self.model is None:
            signals.append(Signal("image_model", Action.ALLOW, "image:no image model loaded", "image:model"))
        signals.append(Signal("image_model", Action.ALLOW,
                              f"image:no model for {', '.join(UNMODELLED_CATEGORIES)}: caption and profile only",
                              "image:model"))
        return ImageResult(pending.hashes, pending.matches, model_scores or {}, signals,
                           _scores(pending, model_scores or {}))


def _model_signals(images: ImagePolicy, scores: dict[str, float], band: AgeBand) -> list[Signal]:
    signals = []
    for category, score in scores.items():
        limits = images.models.get(category, {}).get(band)
        for action in (Action.BLOCK, Action.REVIEW):
            limit = getattr(limits, action.value, None)
            if limit is not None and score >= limit:
                signals.append(Signal(category, action, f"image:model {category} {score:.2f} >= {action.value} "
                                                        f"{limit:.2f} for {band.value}", "image:model"))
                break
        else:
            signals.append(Signal(category, Action.ALLOW, f"image:model {category} {score:.2f}", "image:model"))
    return signals


def _scores(pending: _Pending, model_scores: dict[str, float]) -> dict[str, float]:
    """Scores shown on the decision: the nearest pHash (or SHA-256) bank distance, the nearest PDQ
    distance and the PDQ quality, and the model's scores."""
    def nearest(types: Iterable[str], default: int | None) -> int | None:
        return min((m.distance for m in pending.matches if m.signal_type in types), default=default)

    scores = {"image_bank_distance": float(nearest(("sha256", "phash"), NO_MATCH_DISTANCE)),
              "image_pdq_quality": float(pending.hashes[0].pdq_quality), **model_scores}
    pdq = nearest(("pdq",), None)
    if pdq is not None:
        scores["image_pdq_distance"] = float(pdq)
    return scores
