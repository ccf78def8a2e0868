"""tools.score_images: offline image scoring through the job's screener."""
import io
import json

import pytest
from PIL import Image

from lifeguard import PROJECT_ROOT
from lifeguard.config import load_config
from lifeguard.schemas import AgeBand
from tools.score_images import score_images, score_images_to
from udfs.image_tier import Banks
from udfs.images import decode_image, image_hashes
from udfs.screening import Screener

BRIDGE = PROJECT_ROOT.parent / "shared" / "data" / "reference-vectors" / "pdq-threatexchange" / "bridge-mods"


@pytest.fixture(scope="module")
def screener() -> Screener:
    screener = Screener.from_config(load_config(environ={}))
    banks = Banks()
    original = (BRIDGE / "aaa-orig.jpg").read_bytes()
    banks.add("block", "pdq", [image_hashes(decode_image(original, 10**7, 10**7), original).pdq])
    screener.set_banks(banks)
    return screener


def test_each_image_gets_hashes_matches_and_the_action(screener, tmp_path):
    (tmp_path / "a-blurred.jpg").write_bytes((BRIDGE / "blur-a-lot.jpg").read_bytes())
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 200, 30)).save(buffer, "PNG")
    (tmp_path / "b-green.png").write_bytes(buffer.getvalue())
    (tmp_path / "c-notes.txt").write_text("not an image")
    blurred, green, notes = score_images(screener, tmp_path, AgeBand.ADULT)
    assert blurred["action"] == "block" and blurred["pdq_quality"] == 100 and len(blurred["phash"]) == 16
    assert [(m["bank"], m["signal_type"], m["distance"]) for m in blurred["matches"]] == [("block", "pdq", 4)]
    assert any("in bank block (block bank match)" in r for r in blurred["reasons"])
    assert green["matches"] == [] and green["action"] in ("allow", "review")
    assert notes["action"] == "dead_letter" and "format_not_allowed" in notes["reasons"][0]


def test_a_single_file_is_written_as_one_json_line(screener):
    sink = io.StringIO()
    assert score_images_to(screener, BRIDGE / "shrink-a-lot.jpg", sink) == 1
    (line,) = sink.getvalue().splitlines()
    result = json.loads(line)
    assert result["file"].endswith("shrink-a-lot.jpg") and result["action"] == "block"
