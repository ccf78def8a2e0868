"""The synthetic child-directed set: its three files, their labels, the augmentation and the splits."""
import json
import random

import pytest

from models import child_directed
from models.child_directed import KIND_CATEGORIES, Message, augment, labels, read, variants
from models.datasets import CHILD_DIRECTED, DATA_SETS, load, split_for
from models.splits import split_of


def _folded(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def files() -> dict[str, list[Message]]:
    return {path.name: read(path) for path in (child_directed.TRAIN_SEEDS, child_directed.VAL_SET, child_directed.TEST_SET)}


def test_each_file_covers_every_harmful_kind_and_the_test_set_every_age_pair(files):
    for name, messages in files.items():
        assert {m.kind for m in messages if m.harmful} == set(KIND_CATEGORIES), name
        assert sum(not m.harmful for m in messages) >= 250, name
    test = files["test_set.jsonl"]
    assert sum(m.harmful for m in test) >= 300 and sum(not m.harmful for m in test) >= 300
    for harmful in (True, False):
        assert {m.pair for m in test if m.harmful is harmful} == set(child_directed.PAIRS)


def test_no_test_message_is_also_a_training_or_val_row_and_no_val_message_a_training_row():
    """Separate authors still wrote some of the same short lines ("gg ez", "wanna be friends"): those were
    taken out of the later files (74 of the test set's 884, 26 of the val set's 581)."""
    records = load(next(d for d in DATA_SETS if d.name == CHILD_DIRECTED))
    trained = {_folded(r.text) for r in records if split_for(r) == "train"}
    chosen_on = {_folded(r.text) for r in records if split_for(r) == "val"}
    assert not [m.text for m in read(child_directed.TEST_SET) if _folded(m.text) in trained | chosen_on]
    assert not [m.text for m in read(child_directed.VAL_SET) if _folded(m.text) in trained]


@pytest.mark.parametrize("kind, positives, unlabelled", [
    ("sexual_approach", {"sexual_minors", "sexual"}, {"toxicity"}),
    ("meetup", {"sexual_minors"}, {"pii", "toxicity"}),
    ("personal_info", {"pii"}, {"sexual_minors", "toxicity"}),
    ("threat", {"threat", "toxicity"}, {"hate"}),
    ("bullying", {"toxicity"}, {"threat", "hate"}),
])
def test_a_harmful_kind_labels_its_categories_positive_leaves_its_neighbours_out_and_the_rest_negative(
        kind, positives, unlabelled):
    found = labels(Message("x", True, kind))
    assert {c for c, v in found.items() if v == 1} == positives
    assert set(child_directed.MODEL_CATEGORIES) - set(found) == unlabelled
    assert all(v == 0 for c, v in found.items() if c not in positives)


def test_benign_game_chat_is_a_negative_for_every_category():
    assert labels(Message("headshot the zombie", False, "game_violence")) == dict.fromkeys(child_directed.MODEL_CATEGORIES, 0)


def test_an_unknown_harmful_kind_is_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "hi", "harmful": True, "category": "grooming"}) + "\n")
    with pytest.raises(ValueError, match="unknown harmful kind 'grooming'"):
        read(path)


def test_augmentation_is_seeded_by_the_text_and_keeps_the_seed_first():
    seed = Message("can you send me a picture of you right now please", True, "photo_request")
    first, again = variants(seed, ["gg"]), variants(seed, ["gg"])
    assert first == again and first[0] == seed
    assert 2 <= len(first) <= 1 + child_directed.VARIANTS_PER_SEED
    assert all(m.harmful and m.kind == "photo_request" for m in first)


def test_augment_writes_chat_spellings():
    rng = random.Random(4)
    written = {augment("are you going to be online tonight because i want to see you", [], rng) for _ in range(40)}
    assert any(" u " in f" {text.lower()} " for text in written)
    assert any("wanna" in text.lower() or "gonna" in text.lower() for text in written)


def test_every_variant_of_a_seed_shares_its_split_and_no_seed_lands_in_test():
    data_set = next(d for d in DATA_SETS if d.name == CHILD_DIRECTED)
    records = load(data_set)
    assert {split_for(r) for r in records} == {"train", "val"}
    seeds = read(child_directed.TRAIN_SEEDS)
    pool = child_directed.benign_pool(seeds)
    by_text = {r.text: split_for(r) for r in records}
    for seed in seeds[::25]:
        expected = "val" if split_of(seed.text) == "val" else "train"
        assert {by_text[m.text] for m in variants(seed, pool)} == {expected}
