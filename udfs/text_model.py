"""The text model at run time: calibrated per-category probabilities for a batch of texts, by a cascade.

Stage 1, for every message: the linear char n-gram model, one ONNX graph built by
`models/train_text.py`. Stage 2, for every message where a minor is involved and for what stage 1
leaves uncertain: the MiniLM sentence encoder with stacked heads, one ONNX graph built by `models/train_text_stage2.py`
that reads the text's tokens, its stage-1 scores and, where the stage-2 file names one, the logits of a
fine-tuned MiniLM (`models/train_text_tuned.py`, a file beside it) for the categories it was tuned on.
Each stage runs per batch, never once per record (stage 1 in one run, stage 2 in length-sorted slices:
`udfs.sentence_encoder.run_by_length`). Everything the runtime needs besides the weights travels in
each file's metadata: versions, categories (in column order), the featurizer's parameters, the cascade's
bounds, and the fine-tuned file's name.

Create a `TextModel` in an operator's ``open()``, never at import: the sessions are heavy and cannot be
pickled.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from udfs.normalize import normalize
from udfs.sentence_encoder import (DEFAULT_TOKENIZER, DIMENSION, EMBEDDING_OUTPUT, EncoderLoadError, encode,
                                   load_tokenizer, providers, run_by_length)
from udfs.text_features import FeaturizerParams, featurize

# The canonical category names of the whole project, in a fixed order.
CATEGORIES = ("toxicity", "hate", "threat", "sexual", "sexual_minors", "self_harm", "pii", "spam")

REQUIRED_METADATA = ("version", "categories", "featurizer")
REQUIRED_STAGE2_METADATA = ("version", "categories", "stage1_version", "cascade")
STAGE1_INPUT = "stage1_scores"  # the second stage's input of first-stage scores float32[N, C]
TUNED_LOGITS = "tuned_logits"  # the fine-tuned encoder's output, the second stage's input float32[N, T]
# The fine-tuned encoder runs one row at a time: its int8 graph quantises activations per run (dynamic
# quantisation), so in a slice of 8 a message's logit moved with its neighbours, by up to 0.86 on val
# text. One row per run makes a message's score its own, for 16% more time than slices of 8.
TUNED_ROWS_PER_RUN = 1
IDENTITY_MASK = "[MASK]"  # the tokenizer's mask token, one word piece
BUILD_HINT = "run `make models` to build it"


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable or not a Lifeguard text model."""


@dataclass(frozen=True)
class CascadeBounds:
    """When a message goes to the second stage: always when a minor is involved (every room message, a
    direct message with a minor at either end); otherwise when, for a category the second stage serves,
    its first-stage score is uncertain, ``low <= score < high`` (bounds set on val)."""

    low: Mapping[str, float]
    high: Mapping[str, float]

    def escalate(self, scores: np.ndarray, categories: Sequence[str], minor_involved: np.ndarray) -> np.ndarray:
        """bool[N]: which rows of first-stage `scores` float[N, C] (columns `categories`) go to stage 2."""
        chosen = np.array(minor_involved, dtype=bool)
        for column, category in enumerate(categories):
            if category in self.low:
                chosen |= (scores[:, column] >= self.low[category]) & (scores[:, column] < self.high[category])
        return chosen


class SecondStage:
    """The encoder-and-heads graph, the fine-tuned encoder whose logits it stacks (if any) and the tokenizer;
    `run` scores the rows it is given and returns their sentence embeddings too (the grooming bank compares
    messages in the same space)."""

    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: Tokenizer, version: str,
                 bounds: CascadeBounds, tuned: onnxruntime.InferenceSession | None = None):
        self._session = session
        self._tokenizer = tokenizer
        self._tuned = tuned
        self._identity_terms = None if tuned is None else masked_identity_terms(tuned)
        self.version = version
        self.bounds = bounds

    def run(self, texts: Sequence[str], stage1_scores: np.ndarray, scored: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """Scores float32[N, C] and embeddings float32[N, 384] for `texts`, given their first-stage scores
        float32[N, C]; a few session runs, by length (`udfs.sentence_encoder.run_by_length`). The
        fine-tuned encoder runs only on the rows in `scored` (bool[N], default all): the other rows' scores
        are not for use, and their embeddings do not depend on it."""
        feeds = encode(self._tokenizer, texts) | {STAGE1_INPUT: stage1_scores.astype(np.float32)}
        if self._tuned is not None:
            feeds[TUNED_LOGITS] = tuned_logits(self._tuned, self._tokenizer, texts,
                                               np.ones(len(texts), bool) if scored is None else scored,
                                               self._identity_terms)
        scores, embeddings = run_by_length(feeds, lambda sliced: self._session.run(["scores", EMBEDDING_OUTPUT],
                                                                                   sliced))
        return scores, embeddings


def tuned_logits(session: onnxruntime.InferenceSession, tokenizer: Tokenizer, texts: Sequence[str],
                 rows: np.ndarray, identity_terms: re.Pattern | None) -> np.ndarray:
    """The fine-tuned encoder's logits float32[N, T] for `texts`, computed for the `rows` (bool[N]) only and
    0 elsewhere, each text as `tuned_input` makes it."""
    logits = np.zeros((len(rows), session.get_outputs()[0].shape[-1]), dtype=np.float32)
    chosen = np.flatnonzero(rows)
    if len(chosen):
        feeds = encode(tokenizer, [tuned_input(texts[i], identity_terms) for i in chosen])
        (logits[chosen],) = run_by_length(feeds, lambda sliced: session.run([TUNED_LOGITS], sliced), TUNED_ROWS_PER_RUN)
    return logits


@dataclass(frozen=True)
class ScoredTexts:
    """A batch's calibrated probabilities per category, and the sentence embedding of each row that the
    second stage scored (None for the others)."""

    scores: list[dict[str, float]]
    embeddings: list[np.ndarray | None]


class TextModel:
    def __init__(self, session: onnxruntime.InferenceSession, version: str,
                 categories: tuple[str, ...], featurizer: FeaturizerParams, second_stage: SecondStage | None = None):
        self._session = session
        # Only the categories the model was trained on (pii has no training data: rules handle it).
        self.categories = categories
        self.featurizer = featurizer
        self.second_stage = second_stage
        self.version = version if second_stage is None else f"{version}+{second_stage.version}"
        # Messages scored, those the cascade escalated (its second-stage share is escalated / scored), and
        # those the second stage ran on, escalated or only embedded (the encoder's load).
        self.scored = 0
        self.escalated = 0
        self.embedded = 0

    @classmethod
    def load(cls, path: Path, prefer_gpu: bool = True, second_stage: Path | None = None,
             tokenizer: Path | None = None) -> "TextModel":
        """The first stage from `path`; with `second_stage`, the cascade (its tokenizer from `tokenizer`,
        by default the one `make models` copies to models/build/)."""
        path = Path(path)
        session = _session(path, prefer_gpu)
        version, categories, featurizer = _read_metadata(path, session.get_modelmeta().custom_metadata_map)
        if session.get_outputs()[0].shape[-1] != len(categories):
            raise ModelLoadError(f"text model {path} has a score column count unlike its categories: {BUILD_HINT}")
        stage2 = None if second_stage is None else _load_second_stage(
            Path(second_stage), prefer_gpu, tokenizer, version, categories)
        return cls(session, version, categories, featurizer, stage2)

    def score_batch(self, texts: Sequence[str], minor_involved: Sequence[bool] | None = None) -> list[dict[str, float]]:
        """Calibrated probability per category for each text: stage 1 in one session run for the batch,
        then stage 2 for the rows the cascade sends it (`CascadeBounds`)."""
        return self.score_and_embed(texts, minor_involved).scores

    def score_and_embed(self, texts: Sequence[str], minor_involved: Sequence[bool] | None = None,
                        embedding_wanted: Sequence[bool] | None = None) -> ScoredTexts:
        """`score_batch`, and the rows in `embedding_wanted` also go through stage 2 for their sentence
        embeddings (one encoder pass serves the cascade and the caller). Such a row keeps its stage-1
        scores unless the cascade escalated it: the policy's thresholds were set on the cascade's scores."""
        if not texts:
            return ScoredTexts([], [])
        ids, weights = featurize(texts, self.featurizer)
        (scores,) = self._session.run(["scores"], {"ids": ids, "weights": weights})
        # shape: scores float32[N, len(categories)]
        self.scored += len(texts)
        embeddings: list[np.ndarray | None] = [None] * len(texts)
        if self.second_stage is not None:
            escalated = self.second_stage.bounds.escalate(scores, self.categories, _flags(minor_involved, len(texts)))
            chosen = np.flatnonzero(escalated | _flags(embedding_wanted, len(texts)))
            if len(chosen):
                kept = escalated[chosen]
                stage2_scores, vectors = self.second_stage.run([texts[i] for i in chosen], scores[chosen], kept)
                scores[chosen[kept]] = stage2_scores[kept]
                self.escalated += int(kept.sum())
                self.embedded += len(chosen)
                for row, vector in zip(chosen, vectors):
                    embeddings[row] = vector
        return ScoredTexts([dict(zip(self.categories, map(float, row))) for row in scores], embeddings)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32[N, 384]: the second stage's sentence embeddings (for the grooming bank's examples)."""
        if self.second_stage is None:
            raise ModelLoadError(f"text model {self.version} has no second stage to embed with: {BUILD_HINT}")
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        return self.second_stage.run(texts, np.full((len(texts), len(self.categories)), 0.5, np.float32),
                                     np.zeros(len(texts), bool))[1]

    def score_matrix(self, texts: Sequence[str], minor_involved: bool = False, batch: int = 256) -> np.ndarray:
        """float[len(texts), len(categories)] for many texts offline (training, thresholds, evaluation),
        scored through ``score_batch`` in batches, as the job scores them."""
        rows = []
        for start in range(0, len(texts), batch):
            chunk = texts[start:start + batch]
            rows += [[scores[c] for c in self.categories] for scores in self.score_batch(chunk, [minor_involved] * len(chunk))]
        return np.array(rows, dtype=np.float64).reshape(len(texts), len(self.categories))


def masked_identity_terms(tuned: onnxruntime.InferenceSession) -> re.Pattern | None:
    """The pattern of the identity terms the fine-tuned encoder was trained with masked (its metadata)."""
    return identity_pattern(json.loads(tuned.get_modelmeta().custom_metadata_map.get("masked_identity_terms", "[]")))


def identity_pattern(terms: Sequence[str]) -> re.Pattern | None:
    """One pattern for the whole words (or phrases) in `terms`, longest first; None for no terms."""
    if not terms:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)) + r")\b")


def tuned_input(text: str, identity_terms: re.Pattern | None) -> str:
    """What the fine-tuned encoder reads: the normalised text (`udfs.normalize`, as stage 1 reads it: "y0u
    st00pid 1diot" becomes "you stoopid idiot"), with each identity term masked. In its training text,
    "gay" and "queer" were mostly insults (Davidson's tweets), so unmasked it learnt to flag the words
    themselves; masked, it must judge what is said. Slurs are not identity terms and stay visible, and
    stage 1 and the frozen heads still read the text as written."""
    folded = normalize(text)
    return folded if identity_terms is None else identity_terms.sub(IDENTITY_MASK, folded)


def _flags(values: Sequence[bool] | None, n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool) if values is None else np.asarray(values, dtype=bool)


def _session(path: Path, prefer_gpu: bool) -> onnxruntime.InferenceSession:
    if not path.is_file():
        raise ModelLoadError(f"text model {path} not found: {BUILD_HINT}")
    try:
        return onnxruntime.InferenceSession(str(path), providers=providers(prefer_gpu))
    except Exception as error:  # onnxruntime raises several types for a corrupt or truncated file
        raise ModelLoadError(f"text model {path} cannot be loaded ({error}): {BUILD_HINT}") from error


def _load_second_stage(path: Path, prefer_gpu: bool, tokenizer_path: Path | None, stage1_version: str,
                       categories: tuple[str, ...]) -> SecondStage:
    session = _session(path, prefer_gpu)
    metadata = session.get_modelmeta().custom_metadata_map
    missing = [key for key in REQUIRED_STAGE2_METADATA if key not in metadata]
    if missing:
        raise ModelLoadError(f"text model {path} lacks metadata {missing}: {BUILD_HINT}")
    if metadata["stage1_version"] != stage1_version or json.loads(metadata["categories"]) != list(categories):
        raise ModelLoadError(f"text model {path} was stacked on {metadata['stage1_version']}, not on the first "
                             f"stage loaded ({stage1_version}): {BUILD_HINT}")
    try:
        bounds = CascadeBounds(**json.loads(metadata["cascade"]))
        tokenizer = load_tokenizer(tokenizer_path or DEFAULT_TOKENIZER)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"text model {path} has unreadable metadata ({error}): {BUILD_HINT}") from error
    except EncoderLoadError as error:
        raise ModelLoadError(str(error)) from error
    tuned = None
    if "tuned_model" in metadata:
        tuned_path = path.parent / metadata["tuned_model"]
        tuned = _session(tuned_path, prefer_gpu)
        tuned_version = tuned.get_modelmeta().custom_metadata_map.get("version")
        if tuned_version != metadata.get("tuned_version"):
            raise ModelLoadError(f"text model {path} was stacked on {metadata.get('tuned_version')}, not on the "
                                 f"fine-tuned encoder in {tuned_path} ({tuned_version}): {BUILD_HINT}")
    return SecondStage(session, tokenizer, metadata["version"], bounds, tuned)


def _read_metadata(path: Path, metadata: dict[str, str]) -> tuple[str, tuple[str, ...], FeaturizerParams]:
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelLoadError(f"text model {path} lacks metadata {missing}: {BUILD_HINT}")
    try:
        categories = tuple(json.loads(metadata["categories"]))
        featurizer = FeaturizerParams.from_json(metadata["featurizer"])
    except (ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"text model {path} has unreadable metadata ({error}): {BUILD_HINT}") from error
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ModelLoadError(f"text model {path} scores unknown categories {sorted(unknown)}: {BUILD_HINT}")
    return metadata["version"], categories, featurizer
