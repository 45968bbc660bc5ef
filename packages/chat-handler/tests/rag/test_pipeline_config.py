import pytest
from pydantic import ValidationError

from chat_handler.rag import RAGConfig


def test_defaults_fit_the_cpu_llm() -> None:
    config = RAGConfig()
    assert config.budget.context_tokens == 2048
    assert (config.chunk_size, config.chunk_overlap) == (800, 100)


def test_overlap_must_be_below_the_chunk_size() -> None:
    with pytest.raises(ValidationError, match="chunk_overlap"):
        RAGConfig(chunk_size=100, chunk_overlap=100)


def test_config_round_trips_through_a_dict() -> None:
    config = RAGConfig(temperature=0, chunk_size=400, chunk_overlap=50)
    assert RAGConfig.model_validate(config.model_dump()) == config


def test_the_prompt_template_must_say_where_the_passages_go() -> None:
    with pytest.raises(ValidationError, match="passages"):
        RAGConfig(prompt_template="Answer briefly.")
    custom = RAGConfig(prompt_template="Be brief.\n{passages}")
    assert custom.prompt_template.endswith("{passages}")
