"""The evaluation report's metric functions on cases small enough to check by hand, and its readers
on the real benchmark files in ../shared/data."""
from collections import Counter

import numpy as np
import pytest

from models.datasets import DEFAULT_DATA_DIR
from models.evaluate import (EVASION_DIR, NAME_TEMPLATE_SAMPLE, at_threshold, caught_and_false_positives,
                             expected_calibration_error, gap_summary, identity_templates, prior_weights,
                             read_paragraphs, read_peer_cases, recall_at_fpr, roc_auc)

EVASION = DEFAULT_DATA_DIR / EVASION_DIR


@pytest.mark.parametrize("labels, scores, expected", [
    # 4 positive-negative pairs; only (0.4 negative, 0.35 positive) is out of order: 3 / 4.
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
    ([0, 1], [0.5, 0.5], 0.5),  # a tie counts half
    ([1, 1, 0], [0.9, 0.8, 0.1], 1.0),
    ([1, 0], [0.1, 0.9], 0.0),
])
def test_roc_auc(labels, scores, expected):
    assert roc_auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


NEGATIVES = [0.1, 0.2, 0.3, 0.9]
POSITIVES = [0.95, 0.8, 0.5, 0.2]


@pytest.mark.parametrize("max_fpr, expected", [
    (0.0, 0.25),  # no false positive allowed: flag above 0.9, catching only 0.95
    (0.01, 0.25),  # 1% of 4 negatives is still none
    (0.25, 0.75),  # one false positive (0.9) allowed: flag above 0.3
    (0.5, 0.75),  # two allowed (0.9, 0.3): flag above 0.2; the positive at 0.2 ties the next negative
    (1.0, 1.0),
])
def test_recall_at_fpr(max_fpr, expected):
    labels = np.array([0] * len(NEGATIVES) + [1] * len(POSITIVES))
    scores = np.array(NEGATIVES + POSITIVES)
    assert recall_at_fpr(labels, scores, max_fpr) == pytest.approx(expected)


def test_recall_at_fpr_does_not_split_a_tie_across_the_budget():
    assert recall_at_fpr(np.array([0, 1, 1]), np.array([0.5, 0.5, 0.7]), 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("labels, scores, weights, expected", [
    # bin 1: mean 0.1, positive share 0.5, half the rows; bin 9: mean 0.9, share 1.0, half the rows
    ([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9], None, 0.5 * 0.4 + 0.5 * 0.1),
    ([1, 0], [1.0, 0.0], None, 0.0),  # a score of exactly 1 falls in the last bin
    ([0, 1], [0.3, 0.3], None, 0.2),  # one bin: |0.3 - 0.5|
    # weights 3,1 in bin 1: positive share 1/4, gap 0.15, bin share 4/6; bin 9 gap 0.1, share 2/6
    ([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9], [3, 1, 1, 1], 4 / 6 * 0.15 + 2 / 6 * 0.1),
])
def test_expected_calibration_error(labels, scores, weights, expected):
    assert expected_calibration_error(np.array(labels), np.array(scores), weights) == pytest.approx(expected)


def test_prior_weights_give_the_asked_positive_share():
    labels = np.array([1, 0, 0, 0])
    weights = prior_weights(labels, 0.5)
    assert weights.tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    assert np.average(labels, weights=weights) == pytest.approx(0.5)


def test_at_threshold_counts_scores_at_the_threshold_as_flagged():
    labels = np.array([1, 1, 0, 0, 0, 0])
    scores = np.array([0.5, 0.2, 0.5, 0.1, 0.1, 0.1])
    result = at_threshold(labels, scores, 0.5, rate=0.1)
    assert (result["recall"], result["fpr"], result["precision"]) == pytest.approx((0.5, 0.25, 0.5))
    # at 10% positives: 0.1 * 0.5 caught against 0.9 * 0.25 false alarms
    assert result["precision_at_chat_rate"] == pytest.approx(0.05 / (0.05 + 0.225))


def test_gap_summary_names_the_worst_terms_each_way():
    rates = {"a": 0.1, "b": 0.4, "c": 0.0}
    assert gap_summary(rates, worst_high=True)["max_gap"] == pytest.approx(0.4)
    assert list(gap_summary(rates, worst_high=True)["worst_terms"]) == ["b", "a", "c"]
    assert list(gap_summary(rates, worst_high=False)["worst_terms"]) == ["c", "a", "b"]


def test_paragraph_reader_on_the_real_benchmark():
    paragraphs = read_paragraphs(EVASION / "better_profanity/data/paragraphs/1000paras-005per")
    assert len(paragraphs) == 1000
    assert sum(p.profane for p in paragraphs) == 952  # the README's count
    assert "p*l10ck" in paragraphs[0].text and paragraphs[0].profane
    clean = read_paragraphs(EVASION / "better_profanity/data/paragraphs/0010paras-000per")
    assert len(clean) == 10 and not any(p.profane for p in clean)


def test_peer_case_reader_gives_the_recorded_peer_results():
    cases = read_peer_cases(EVASION / "peer_results_computed_here.csv")
    assert len(cases) == 26
    assert Counter(case.case_source for case in cases) == {"obscenity": 14, "better_profanity": 12}
    fk_you = next(case for case in cases if case.text == "fk you")
    assert fk_you.expected_match and fk_you.peer_answers["better-profanity 0.7.0"] is False
    obscenity = "obscenity(npm) 0.4.6 englishDataset+recommended transformers"
    result = caught_and_false_positives([c.expected_match for c in cases], [c.peer_answers[obscenity] for c in cases])
    assert result == {"caught": 18, "profane": 20, "false_positives": 0, "clean": 6}


def test_identity_probe_sample_is_even_across_terms():
    templates = identity_templates(DEFAULT_DATA_DIR)
    named = Counter((t.term, t.toxic) for t in templates if t.template == "name_adj")
    assert len({term for term, _ in named}) == 50
    assert set(named.values()) == {NAME_TEMPLATE_SAMPLE}
    assert any(t.phrase == "I am gay" for t in templates)  # every short template row is kept
    assert templates == identity_templates(DEFAULT_DATA_DIR)
