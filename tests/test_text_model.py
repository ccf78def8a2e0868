"""The text model's featurizer, ONNX graph and runtime wrapper.

Tests that need the trained model use models/build/text_linear.onnx, building it first (about a
minute on 2 cores) when it is missing, as `make models` would.
"""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from scipy import sparse
from scipy.special import expit

from lifeguard import PROJECT_ROOT
from models import train_text
from udfs.text_features import FeaturizerParams, featurize, pad_rows, vectorize
from udfs.text_model import CATEGORIES, ModelLoadError, TextModel

MODEL_PATH = PROJECT_ROOT / "models" / "build" / "text_linear.onnx"

TOXIC = ["you are a stupid worthless idiot", "shut up you dumb bitch", "y0u are a st00pid 1diot",
         "f u c k you loser"]
BENIGN = ["see you at practice tomorrow", "thanks for helping me with my homework", "can we play minecraft after school"]
PARAMS = FeaturizerParams(n_features=2**16, ngram_range=(3, 5), analyzer="char_wb")
VARIED = [*TOXIC, *BENIGN, "", "   ", "ＦＵＣＫ", "привет", "🙂" * 50, "word " * 2000]


@pytest.fixture(scope="session")
def model_path():
    if not MODEL_PATH.exists():
        train_text.main(["--out", str(MODEL_PATH)])
    return MODEL_PATH


@pytest.fixture(scope="session")
def model(model_path):
    return TextModel.load(model_path, prefer_gpu=False)


# Featurizer


def test_featurize_is_deterministic():
    first_ids, first_weights = featurize(VARIED, PARAMS)
    again_ids, again_weights = featurize(VARIED, PARAMS)
    assert np.array_equal(first_ids, again_ids)
    assert np.array_equal(first_weights, again_weights)


def test_a_texts_features_do_not_depend_on_its_batch():
    batch_ids, batch_weights = featurize(VARIED, PARAMS)
    for row, text in enumerate(VARIED):
        alone_ids, alone_weights = featurize([text], PARAMS)
        width = alone_ids.shape[1]
        assert np.array_equal(batch_ids[row, :width], alone_ids[0])
        assert np.array_equal(batch_weights[row, :width], alone_weights[0])
        assert not batch_weights[row, width:].any()  # the rest is padding


def test_disguised_and_plain_text_share_features():
    plain_ids, plain_weights = featurize(["shit head"], PARAMS)
    for disguised in ["sh1t head", "ＳＨＩＴ head", "s h i t head", "sh\u200bit head"]:
        ids, weights = featurize([disguised], PARAMS)
        assert np.array_equal(ids, plain_ids) and np.array_equal(weights, plain_weights), disguised


def test_pad_rows_left_aligns_each_rows_features_and_pads_with_zero_weight():
    matrix = sparse.csr_matrix(np.array([[0, 0, 0, 0.6, 0, 0, 0, 0.8], [0] * 8, [1.0, 0, 0, 0, 0, 0, 0, 0]],
                                        dtype=np.float32))
    ids, weights = pad_rows(matrix)
    assert ids.dtype == np.int64 and weights.dtype == np.float32
    assert ids.tolist() == [[3, 7], [0, 0], [0, 0]]
    assert weights == pytest.approx(np.array([[0.6, 0.8], [0, 0], [1.0, 0]]))


def test_a_batch_of_empty_texts_still_has_one_column():
    ids, weights = featurize(["", " "], PARAMS)
    assert ids.shape == weights.shape == (2, 1)
    assert not weights.any()


def test_featurizer_params_round_trip_and_reject_unknown_keys():
    params = FeaturizerParams(n_features=2**10, ngram_range=(2, 4), analyzer="char")
    assert FeaturizerParams.from_json(params.to_json()) == params
    with pytest.raises(ValueError, match="lowercase"):
        FeaturizerParams.from_json('{"n_features": 8, "ngram_range": [2, 4], "analyzer": "char", "lowercase": true}')


# The ONNX graph against a numpy reference


def _reference_scores(texts, params, weights, bias):
    """The same linear model computed from the sparse features, without padding or ONNX."""
    return expit(vectorize(texts, params) @ weights + bias)


def test_graph_equals_numpy_reference_on_a_small_random_model(tmp_path):
    params = FeaturizerParams(n_features=2**8, ngram_range=(3, 5), analyzer="char_wb")
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(params.n_features, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    metadata = {"version": "test", "categories": '["toxicity", "hate", "spam"]', "featurizer": params.to_json()}
    path = tmp_path / "tiny.onnx"
    onnx.save(train_text.build_graph(weights, bias, metadata), path)

    scores = TextModel.load(path, prefer_gpu=False).score_batch(VARIED)

    expected = _reference_scores(VARIED, params, weights, bias)
    actual = np.array([[row[c] for c in ("toxicity", "hate", "spam")] for row in scores])
    assert actual == pytest.approx(expected, abs=1e-5)


def test_trained_graph_equals_numpy_reference(model_path, model):
    graph = onnx.load(model_path).graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}

    scores = model.score_batch(VARIED)

    expected = _reference_scores(VARIED, model.featurizer, initializers["W"], initializers["bias"])
    actual = np.array([[row[c] for c in model.categories] for row in scores])
    assert actual == pytest.approx(expected, abs=1e-5)


# The runtime wrapper


def test_model_metadata_matches_training(model):
    assert model.version == train_text.VERSION
    assert model.featurizer == train_text.FEATURIZER
    # The categories are canonical, in canonical order, and pii (no training data) is left to rules.
    assert list(model.categories) == [c for c in CATEGORIES if c in model.categories]
    assert "pii" not in model.categories
    assert {"toxicity", "hate", "threat", "sexual", "sexual_minors", "self_harm", "spam"} <= set(model.categories)


def test_score_batch_gives_a_probability_for_every_category(model):
    scores = model.score_batch(VARIED)
    assert len(scores) == len(VARIED)
    for row in scores:
        assert set(row) == set(model.categories)
        assert all(0.0 <= p <= 1.0 for p in row.values())


def test_empty_batch_gives_empty_list(model):
    assert model.score_batch([]) == []


def test_obvious_toxic_text_scores_above_benign_text(model):
    toxic = [row["toxicity"] for row in model.score_batch(TOXIC)]
    benign = [row["toxicity"] for row in model.score_batch(BENIGN)]
    assert min(toxic) > 0.5 > max(benign)


@pytest.mark.parametrize("category, harmful, harmless", [
    ("threat", "i will kill you", "i will call you"),
    ("self_harm", "i want to kill myself", "i want to play football"),
    ("spam", "WINNER! claim your free prize now, text WIN to 80086", "are we still meeting for lunch"),
])
def test_each_head_separates_an_obvious_pair(model, category, harmful, harmless):
    harmful_score, harmless_score = (row[category] for row in model.score_batch([harmful, harmless]))
    assert harmful_score > 0.5 > harmless_score


def test_probabilities_are_calibrated_on_the_test_split(model_path, model):
    """The build's own test-split measurements: expected calibration error small for every head."""
    manifest = model_path.with_name(model_path.stem + ".manifest.json")
    metrics = json.loads(manifest.read_text())["test_metrics"]
    for category in model.categories:
        assert metrics[category]["ece"] < 0.05, category
        assert metrics[category]["roc_auc"] > 0.85, category


class _CountingSession:
    """Stands in for onnxruntime.InferenceSession: counts runs and returns zero logits' sigmoid."""

    def __init__(self, n_categories):
        self.n_categories = n_categories
        self.feeds = []

    def run(self, output_names, feeds):
        self.feeds.append(feeds)
        return [np.full((len(feeds["ids"]), self.n_categories), 0.5, dtype=np.float32)]


def test_score_batch_runs_the_session_once_per_call():
    session = _CountingSession(n_categories=2)
    text_model = TextModel(session, "test", ("toxicity", "spam"), PARAMS)
    assert text_model.score_batch(["one", "two", "three"]) == [{"toxicity": 0.5, "spam": 0.5}] * 3
    assert len(session.feeds) == 1
    feeds = session.feeds[0]
    assert feeds["ids"].shape == feeds["weights"].shape and feeds["ids"].shape[0] == 3


# Loading failures name the fix


def test_missing_model_file_names_make_models(tmp_path):
    with pytest.raises(ModelLoadError, match="make models"):
        TextModel.load(tmp_path / "absent.onnx")


def test_corrupt_model_file_names_make_models(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(ModelLoadError, match="make models"):
        TextModel.load(path)


def test_model_without_lifeguard_metadata_names_make_models(tmp_path):
    path = tmp_path / "bare.onnx"
    graph = train_text.build_graph(np.zeros((8, 1), np.float32), np.zeros(1, np.float32), {"version": "x"})
    onnx.save(graph, path)
    with pytest.raises(ModelLoadError, match="make models"):
        TextModel.load(path)


def test_udfs_never_import_pyflink():
    code = ("import sys, udfs.normalize, udfs.text_features, udfs.text_model; "
            "sys.exit(any(name.split('.')[0] == 'pyflink' for name in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT).returncode == 0
