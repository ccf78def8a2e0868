"""The linear text model at run time: calibrated per-category probabilities for a batch of texts.

The model is one ONNX graph built by `models/train_text.py` (`make models`). Everything the runtime
needs besides the weights travels in the file's metadata: the model version, the categories it
scores (in column order) and the featurizer's parameters. Create a `TextModel` in an operator's
``open()``, never at import: the session is heavy and cannot be pickled.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import onnxruntime

from udfs.text_features import FeaturizerParams, featurize

# The canonical category names of the whole project, in a fixed order.
CATEGORIES = ("toxicity", "hate", "threat", "sexual", "sexual_minors", "self_harm", "pii", "spam")

REQUIRED_METADATA = ("version", "categories", "featurizer")
BUILD_HINT = "run `make models` to build it"


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable or not a Lifeguard text model."""


class TextModel:
    def __init__(self, session: onnxruntime.InferenceSession, version: str,
                 categories: tuple[str, ...], featurizer: FeaturizerParams):
        self._session = session
        self.version = version
        # Only the categories the model was trained on (pii has no training data: rules handle it).
        self.categories = categories
        self.featurizer = featurizer

    @classmethod
    def load(cls, path: Path, prefer_gpu: bool = True) -> "TextModel":
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"text model {path} not found: {BUILD_HINT}")
        try:
            session = onnxruntime.InferenceSession(str(path), providers=_providers(prefer_gpu))
        except Exception as error:  # onnxruntime raises several types for a corrupt or truncated file
            raise ModelLoadError(f"text model {path} cannot be loaded ({error}): {BUILD_HINT}") from error
        version, categories, featurizer = _read_metadata(path, session.get_modelmeta().custom_metadata_map)
        if session.get_outputs()[0].shape[-1] != len(categories):
            raise ModelLoadError(f"text model {path} has a score column count unlike its categories: {BUILD_HINT}")
        return cls(session, version, categories, featurizer)

    def score_batch(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Calibrated probability per category for each text, in one session run for the batch."""
        if not texts:
            return []
        ids, weights = featurize(texts, self.featurizer)
        (scores,) = self._session.run(["scores"], {"ids": ids, "weights": weights})
        # shape: scores float32[N, len(categories)]
        return [dict(zip(self.categories, map(float, row))) for row in scores]


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


def _providers(prefer_gpu: bool) -> list[str]:
    if prefer_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
