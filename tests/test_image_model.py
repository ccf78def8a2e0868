"""udfs.image_model: the bundled open_nsfw ONNX model, batched."""
import numpy as np
import pytest
from PIL import Image

from tools.simulator import procedural_image
from udfs.image_model import MODELLED_CATEGORIES, UNMODELLED_CATEGORIES, ImageModel


@pytest.fixture(scope="module")
def model() -> ImageModel:
    return ImageModel.load(prefer_gpu=False)


def test_a_batch_scores_like_one_image_at_a_time(model):
    rng = np.random.default_rng(11)
    images = [procedural_image(rng) for _ in range(5)] + [Image.new("RGB", (300, 200), (230, 180, 150))]
    batch = model.score_batch(images)
    one_by_one = [model.score_batch([image])[0] for image in images]
    assert [set(s) for s in batch] == [set(MODELLED_CATEGORIES)] * len(images)
    for together, alone in zip(batch, one_by_one):
        assert together["nudity"] == pytest.approx(alone["nudity"], abs=1e-5)
        assert 0.0 <= together["nudity"] <= 1.0


def test_benign_generated_pictures_score_low(model):
    rng = np.random.default_rng(12)
    scores = [s["nudity"] for s in model.score_batch([procedural_image(rng) for _ in range(8)])]
    assert max(scores) < 0.4, scores  # below the policy's review threshold for children


def test_an_empty_batch_runs_nothing(model):
    assert model.score_batch([]) == []


def test_the_categories_with_and_without_a_model_are_stated():
    assert MODELLED_CATEGORIES == ("nudity",)
    assert set(UNMODELLED_CATEGORIES) == {"weapons", "gore", "hate_symbols"}
    assert ImageModel.version.startswith("open_nsfw-onnx-")
