"""`lifeguard score images DIR_OR_FILE`: what the current policy and banks would do with images, offline.

Each file (a directory is walked in name order) becomes an upload by URI from a sender of the given age
band to a room, and goes through ``udfs.screening.Screener`` (the job's own code path) for the action
and reasons. The hashes, bank matches and model scores shown beside them come from the same image tier
code, run once more with the screener's banks and model (its own flood counts, so the extra run
changes nothing). Writes one JSON line per image; an image the job would dead-letter says why.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import IO, Iterator

from lifeguard.profiles import UserProfile
from lifeguard.schemas import AgeBand, DeadLetter, Decision, Upload
from udfs.image_tier import ImageResult, ImageTier
from udfs.parse import Rejected, SourceRef
from udfs.screening import ScreeningInput, Screener

BATCH = 32


def image_files(target: Path) -> list[Path]:
    return sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]


def _upload(number: int, path: Path) -> Upload:
    return Upload(schema_version=1, event_id=f"image-{number}", ts=0, user_id="sender", room_id="room",
                  content_type="application/octet-stream", uri=str(path.resolve()))


def _details(result: ImageResult | Rejected) -> dict:
    if isinstance(result, Rejected):
        return {}
    first = result.frames[0]
    return {"sha256": first.sha256, "phash": first.phash, "pdq": first.pdq, "pdq_quality": first.pdq_quality,
            "frames": len(result.frames), "matches": [asdict(m) for m in result.matches],
            "model_scores": {k: round(v, 4) for k, v in result.model_scores.items()}}


def score_images(screener: Screener, target: Path, age_band: AgeBand = AgeBand.UNDER_13) -> Iterator[dict]:
    """One result per image file under ``target``: hashes, matches, model scores, action and reasons."""
    tier = screener.image_tier
    # The files named on the command line are this run's upload folder (the job reads only configured ones).
    folder = target.resolve() if target.is_dir() else target.resolve().parent
    tier.limits = tier.limits.model_copy(update={"upload_roots": [*tier.limits.upload_roots, folder]})
    inspector = ImageTier(tier.banks, tier.limits, tier.model, tier.clock)
    files = image_files(target)
    sender = UserProfile(user_id="sender", age_band=age_band)
    for start in range(0, len(files), BATCH):
        uploads = [_upload(start + i, path) for i, path in enumerate(files[start: start + BATCH])]
        details = inspector.screen(uploads, screener.policy.images, [age_band] * len(uploads))
        items = [ScreeningInput(u, SourceRef("file", 0, start + i, 0), b"", sender, None)
                 for i, u in enumerate(uploads)]
        outputs = {o.event_id: o for o in screener.screen(items, now_ms=0).outputs
                   if isinstance(o, (Decision, DeadLetter))}
        for path, upload, detail in zip(files[start: start + BATCH], uploads, details):
            output = outputs[upload.event_id]
            if isinstance(output, DeadLetter):
                yield {"file": str(path), "action": "dead_letter", "reasons": [output.reason]}
            else:
                yield {"file": str(path), **_details(detail), "action": output.action.value,
                       "reasons": output.reasons}


def score_images_to(screener: Screener, target: Path, sink: IO[str], age_band: AgeBand = AgeBand.UNDER_13) -> int:
    """Writes ``score_images`` as JSON lines; the number of images."""
    count = 0
    for result in score_images(screener, target, age_band):
        sink.write(json.dumps(result) + "\n")
        count += 1
    return count
