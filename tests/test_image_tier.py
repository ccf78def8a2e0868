"""udfs.image_tier: bank kinds and distances, edited re-uploads caught and unrelated images not, flood
quarantine, animations, URIs, and the model only for uploads no bank blocked."""
import base64
import hashlib
import io
import itertools
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lifeguard import PROJECT_ROOT
from lifeguard.config import load_config
from lifeguard.schemas import Action, AgeBand, Upload
from tools.simulator import IMAGE_EDITS, blocklist_images, edited_reupload, encode_image, procedural_image
from udfs.image_model import ImageModel
from udfs.image_policy import BankPolicy, FloodControl, ImagePolicy
from udfs.image_tier import BankMatch, Banks, FloodGuard, ImageResult, ImageTier
from udfs.images import decode_image, image_hashes
from udfs.parse import Rejected
from udfs.policy import load_policy

from benign_images import SOURCES, BenignImage, benign_images

REFERENCE = PROJECT_ROOT.parent / "shared" / "data" / "reference-vectors"
PDQ_IMAGES = REFERENCE / "pdq-threatexchange"
POLICY = load_policy(PROJECT_ROOT / "flink-conf" / "policy.yaml").images
LIMITS = load_config(environ={}).limits.model_copy(update={"max_image_bytes": 10_000_000})
# Real photos banked alongside the simulator's procedural stand-ins (the bridge is also pytx's sample-b).
BANKED_PHOTOS = [PDQ_IMAGES / "bridge-mods/aaa-orig.jpg", PDQ_IMAGES / "labelme-subset/q0122.jpg",
                 PDQ_IMAGES / "labelme-subset/q0746.jpg"]


def upload(data: bytes, event_id: str = "u-1", user_id: str = "u") -> Upload:
    return Upload(schema_version=1, event_id=event_id, ts=1, user_id=user_id, room_id="lobby", content_type="image/png",
                  image_b64=base64.b64encode(data).decode())


def by_uri(uri: str) -> Upload:
    return Upload(schema_version=1, event_id="u-uri", ts=1, user_id="u", room_id="lobby", content_type="image/png",
                  uri=uri)


def hashes_of(data: bytes):
    return image_hashes(decode_image(data, 10_000_000, 10_000_000), data)


def screen_one(tier: ImageTier, data: bytes, policy: ImagePolicy = POLICY,
               band: AgeBand = AgeBand.UNDER_13, user_id: str = "u") -> ImageResult:
    (result,) = tier.screen([upload(data, user_id=user_id)], policy, [band])
    assert not isinstance(result, Rejected), result
    return result


def action_of(result: ImageResult) -> Action:
    return max((s.action for s in result.signals), key=lambda a: a.severity)


def banked_originals() -> list[bytes]:
    return blocklist_images(seed=5) + [path.read_bytes() for path in BANKED_PHOTOS]


def bank_all(banks: Banks, bank: str, images: list[bytes]) -> Banks:
    hashes = [hashes_of(data) for data in images]
    banks.add(bank, "phash", [h.phash for h in hashes])
    banks.add(bank, "pdq", [h.pdq for h in hashes if h.pdq_quality >= POLICY.pdq_min_quality])
    return banks


@pytest.fixture(scope="module")
def block_tier() -> ImageTier:
    return ImageTier(bank_all(Banks(), "block", banked_originals()), LIMITS)


def test_a_match_quotes_where_the_banked_hash_came_from():
    original = banked_originals()[0]
    banks = Banks()
    banks.add("reviewer-confirmed", "phash", [hashes_of(original).phash], "reviewer decision md-7: confirmed nudity")
    edited = edited_reupload(original, "jpeg", random.Random(1))[0]
    result = screen_one(ImageTier(banks, LIMITS), edited)
    assert action_of(result) is Action.BLOCK
    assert "reviewer decision md-7: confirmed nudity" in " ".join(s.reason for s in result.signals)
    banks.remove("reviewer-confirmed", "phash", [hashes_of(original).phash])
    banks.add("reviewer-confirmed", "phash", [hashes_of(original).phash])  # banked again without a note
    assert "reviewer decision" not in " ".join(s.reason for s in screen_one(ImageTier(banks, LIMITS), edited).signals)


# ---- re-uploads caught, unrelated images not ------------------------------------------------------------

# Which edits must block, and which need only be caught (review or block): a 0.5-2% crop moves pHash
# 0-20 bits and PDQ 26-104 bits on these images (measured), beyond a confident match.
MUST_BLOCK = {"exact", "resize", "jpeg", "colour_shift"}


@pytest.mark.parametrize("edit", IMAGE_EDITS)
def test_edited_reuploads_of_banked_images_are_caught(block_tier, edit):
    rng = random.Random(edit)
    actions = [action_of(screen_one(block_tier, edited_reupload(original, edit, rng)[0]))
               for original in banked_originals()]
    if edit in MUST_BLOCK:
        assert actions == [Action.BLOCK] * len(actions)
    else:
        caught = sum(a in (Action.BLOCK, Action.REVIEW) for a in actions)
        assert caught >= len(actions) - 1, actions  # one photo (q0746) moves 20 pHash bits when cropped


@pytest.fixture(scope="module")
def real_benign_images() -> tuple[BenignImage, ...]:
    """The distinct real pictures of tests/benign_images.py, less the banked photos (sample-b.jpg, a copy of
    the banked bridge, goes with them)."""
    return benign_images(frozenset(hashlib.sha256(path.read_bytes()).hexdigest() for path in BANKED_PHOTOS))


def test_the_benign_set_is_at_least_200_distinct_real_pictures_from_every_source(real_benign_images):
    by_source = Counter(image.source for image in real_benign_images)
    assert len(real_benign_images) >= 200 and set(by_source) == set(SOURCES), by_source
    assert len({image.name for image in real_benign_images}) == len(real_benign_images)
    assert not {image.name for image in real_benign_images} & {str(path) for path in BANKED_PHOTOS}
    phash_near = POLICY.distances["phash"].near
    for first, second in itertools.combinations(real_benign_images, 2):
        assert first.phash - second.phash > phash_near, (first.name, second.name)


def test_unrelated_real_images_match_no_bank(block_tier, real_benign_images):
    false_matches = [(image.name, [s.reason for s in result.signals if s.category == "image_bank"])
                     for image in real_benign_images for result in [screen_one(block_tier, image.data)]
                     if result.matches]
    # The false-match rate: 0 of len(real_benign_images), at the block and the near-miss (review) distances,
    # pHash and PDQ.
    assert false_matches == []


# ---- bank kinds and distances -----------------------------------------------------------------------------

def stripes(shift: int = 0) -> bytes:
    image = Image.new("RGB", (96, 96), (30, 160, 90))
    for x in range(0, 96, 12):
        image.paste((200, 20, 40), (x + shift, 0, x + shift + 6, 96))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def flipped_phash(phash: str, bits: int) -> str:
    return f"{int(phash, 16) ^ ((1 << bits) - 1):016x}"


def test_a_near_miss_goes_to_review_and_says_so():
    data = stripes()
    phash = hashes_of(data).phash
    banks = Banks()
    banks.add("block", "phash", [flipped_phash(phash, 8)])  # 8 bits away: beyond match (6), within near (10)
    result = screen_one(ImageTier(banks, LIMITS), data)
    assert action_of(result) is Action.REVIEW
    (reason,) = [s.reason for s in result.signals if s.category == "image_bank"]
    assert reason == (f"image:phash {phash} within 8 bits of {flipped_phash(phash, 8)} in bank block "
                      f"(block bank near miss)")
    assert result.scores["image_bank_distance"] == 8


def test_a_review_bank_match_reviews_and_per_bank_distances_apply():
    data = stripes()
    phash = hashes_of(data).phash
    banks = Banks()
    banks.add("suspected", "phash", [phash])
    banks.add("strict-partner", "phash", [flipped_phash(phash, 5)])
    policy = ImagePolicy.model_validate({**POLICY.model_dump(), "banks": {
        "suspected": {"kind": "review"},
        "strict-partner": {"distances": {"phash": {"match": 2, "near": 4}}}}})
    result = screen_one(ImageTier(banks, LIMITS), data, policy)
    assert action_of(result) is Action.REVIEW
    assert [m.bank for m in result.matches] == ["suspected"]  # 5 bits is beyond strict-partner's near (4)


def test_an_allow_bank_match_suppresses_the_block():
    data = stripes()
    hashes = hashes_of(data)
    banks = Banks()
    banks.add("block", "phash", [hashes.phash])
    banks.add("known-memes", "pdq", [hashes.pdq])
    policy = ImagePolicy.model_validate({**POLICY.model_dump(), "banks": {"known-memes": {"kind": "allow"}}})
    result = screen_one(ImageTier(banks, LIMITS), data, policy)
    assert action_of(result) is Action.ALLOW
    assert any("block suppressed by allow bank known-memes" in s.reason for s in result.signals)
    banks.set_enabled("known-memes", False)
    assert action_of(screen_one(ImageTier(banks, LIMITS), data, policy)) is Action.BLOCK


def test_a_low_quality_pdq_hash_is_not_matched():
    flat = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 120, 120)).save(flat, "PNG")
    hashes = hashes_of(flat.getvalue())
    assert hashes.pdq_quality < POLICY.pdq_min_quality
    banks = Banks()
    banks.add("block", "pdq", [hashes.pdq])
    result = screen_one(ImageTier(banks, LIMITS), flat.getvalue())
    assert result.matches == [] and action_of(result) is Action.ALLOW
    assert result.scores["image_pdq_quality"] == hashes.pdq_quality


def test_a_pdq_match_blocks_and_reports_bank_distance_and_hash():
    data = (PDQ_IMAGES / "bridge-mods/blur-a-lot.jpg").read_bytes()
    banks = Banks()
    banks.add("block", "pdq", ["f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"])  # aaa-orig
    result = screen_one(ImageTier(banks, LIMITS), data)
    assert action_of(result) is Action.BLOCK
    assert result.matches == [BankMatch("block", "pdq", "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
                                        4)]
    assert result.scores["image_pdq_distance"] == 4
    assert any(s.reason.startswith("image:pdq f8f8f0cee0f4a84f0637022a038f67f0") and "within 4 bits" in s.reason
               for s in result.signals)


# ---- flood control ----------------------------------------------------------------------------------------

FLOOD = FloodControl(window_s=60, smoothing=0.5, usual_floor=1.0, spike_factor=5, min_matches=10, quarantine_s=600)
HOT = BankMatch("shared-list", "pdq", "ab" * 32, 3)


def test_a_steady_rate_is_never_quarantined():
    guard = FloodGuard()
    notes = [guard.quarantine_note(HOT, f"user-{t}", FLOOD, t) for t in np.arange(0, 3600, 10.0)]  # 6 a window
    assert notes == [None] * len(notes)


def test_a_spike_of_senders_far_above_the_usual_rate_is_quarantined_then_released():
    guard = FloodGuard()
    for t in range(0, 600, 30):  # the usual: 2 senders a window
        assert guard.quarantine_note(HOT, f"usual-{t}", FLOOD, t) is None
    spike = [guard.quarantine_note(HOT, f"spike-{i}", FLOOD, 600 + i * 0.5) for i in range(30)]
    assert spike[:9] == [None] * 9 and all(spike[9:])  # from the 10th sender in one window: > 5 x 1.99.. and >= 10
    assert "10 senders in 60 s against a usual 2.0" in spike[9]
    assert guard.quarantine_note(HOT, "later", FLOOD, 1000) is not None  # still quarantined, the window is quiet
    # Each sender above the spike line re-arms the quarantine: the last came at 614.5 s.
    assert guard.quarantine_note(HOT, "much-later", FLOOD, 614.5 + 600 + 1) is None
    other = BankMatch("shared-list", "pdq", "cd" * 32, 3)
    assert guard.quarantine_note(other, "later", FLOOD, 1000) is None  # counted per bank hash


def test_one_sender_re_uploading_a_banked_image_cannot_quarantine_its_hash():
    guard = FloodGuard()
    assert [guard.quarantine_note(HOT, "attacker", FLOOD, i * 0.1) for i in range(100)] == [None] * 100


def _flooded(data: bytes, banks: Banks, policy: ImagePolicy, uploads: int) -> list[ImageResult]:
    """The same image from ``uploads`` senders, a tenth of a second apart."""
    now = [0.0]
    tier = ImageTier(banks, LIMITS, clock=lambda: now[0])
    results = []
    for sender in range(uploads):
        now[0] += 0.1
        results.append(screen_one(tier, data, policy, user_id=f"sender-{sender}"))
    return results


def test_a_flood_quarantined_hash_routes_to_review():
    data = stripes()
    banks = Banks()
    banks.add("block", "phash", [hashes_of(data).phash])
    results = _flooded(data, banks, POLICY.model_copy(update={"flood": FLOOD}), uploads=13)
    assert [action_of(r) for r in results] == [Action.BLOCK] * 9 + [Action.REVIEW] * 4  # min_matches 10
    reasons = [s.reason for s in results[-1].signals if s.category == "image_bank"]
    assert "block bank match, flood: 13 senders in 60 s" in reasons[0]


@pytest.mark.parametrize("bank_policy, signal_type", [
    ({}, "sha256"),  # an exact match is the same file: never a meme's false match
    ({"known-bad": BankPolicy(flood_quarantine=False)}, "phash"),  # a bank of confirmed cases
])
def test_exact_matches_and_known_bad_banks_are_never_quarantined(bank_policy, signal_type):
    data = stripes()
    banks = Banks()
    hashes = hashes_of(data)
    banks.add("known-bad", signal_type, [hashes.sha256 if signal_type == "sha256" else hashes.phash])
    policy = POLICY.model_copy(update={"flood": FLOOD, "banks": bank_policy})
    assert [action_of(r) for r in _flooded(data, banks, policy, uploads=30)] == [Action.BLOCK] * 30


# ---- animations, URIs, the model ------------------------------------------------------------------------------

def gif(frames: list[bytes]) -> bytes:
    images = [Image.open(io.BytesIO(f)).convert("RGB") for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


def test_a_banked_image_hidden_in_a_later_frame_of_an_animation_is_caught():
    rng = np.random.default_rng(5)
    innocent = [encode_image(procedural_image(rng), "PNG") for _ in range(5)]
    banned = encode_image(procedural_image(rng), "PNG")
    animation = gif(innocent[:3] + [banned] + innocent[3:])
    banks = Banks()
    banks.add("block", "phash", [hashes_of(gif([banned])).phash])  # as a GIF frame: the same palette loss
    result = screen_one(ImageTier(banks, LIMITS), animation)
    assert len(result.frames) == 4 and action_of(result) is Action.BLOCK


def test_uris_are_read_from_files_and_everything_else_goes_to_dead_letter(tmp_path: Path):
    path = tmp_path / "stripes.png"
    path.write_bytes(stripes())
    tier = ImageTier(Banks(), LIMITS.model_copy(update={"upload_roots": [tmp_path]}))
    results = tier.screen([by_uri(str(path)), by_uri(f"file://{path}"), by_uri("s3://bucket/key.png"),
                           by_uri("https://example.com/a.png"), by_uri(str(tmp_path / "missing.png"))],
                          POLICY, [AgeBand.ADULT] * 5)
    assert [isinstance(r, ImageResult) for r in results] == [True, True, False, False, False]
    assert "uri_store_unavailable: s3:// needs a library" in results[2].reason  # no s3fs installed
    assert "uri_scheme_not_allowed: https://" in results[3].reason
    assert "uri_unreadable: FileNotFoundError" in results[4].reason
    assert all(r.event_id == "u-uri" and r.error_kind == "unprocessable" for r in results[2:])


def test_the_model_runs_once_for_the_uploads_no_bank_blocked():
    banned, rng = stripes(), np.random.default_rng(8)
    banks = Banks()
    banks.add("block", "phash", [hashes_of(banned).phash])
    tier = ImageTier(banks, LIMITS, ImageModel.load(prefer_gpu=False))
    benign = encode_image(procedural_image(rng), "PNG")
    results = tier.screen([upload(banned, "u-1"), upload(b"not an image", "u-2"), upload(benign, "u-3")],
                          POLICY, [AgeBand.UNDER_13] * 3)
    blocked, rejected, screened = results
    assert blocked.model_scores == {} and "nudity" not in blocked.scores
    assert isinstance(rejected, Rejected) and "format_not_allowed" in rejected.reason
    assert set(screened.model_scores) == {"nudity"} and screened.scores["nudity"] < 0.4
    assert any(s.reason.startswith("image:model nudity ") for s in screened.signals)
    assert any("no model for weapons, gore, hate_symbols" in s.reason for s in screened.signals)


def test_model_thresholds_follow_the_audience_band():
    from udfs.image_tier import _model_signals
    assert [s.action for s in _model_signals(POLICY, {"nudity": 0.5}, AgeBand.UNDER_13)] == [Action.REVIEW]
    assert [s.action for s in _model_signals(POLICY, {"nudity": 0.5}, AgeBand.ADULT)] == [Action.ALLOW]
    assert [s.action for s in _model_signals(POLICY, {"nudity": 0.9}, AgeBand.TEEN_16_17)] == [Action.BLOCK]
    assert [s.action for s in _model_signals(POLICY, {"nudity": 0.9}, AgeBand.ADULT)] == [Action.REVIEW]
