"""The chat application's builder arguments, as the rendered Serve config passes them."""

import pytest
from pydantic import ValidationError

from chat_handler.deployment import ChatArgs, build_app
from chat_handler.rag import PROMPT_TEMPLATE


def bound_args(args: dict[str, object]) -> ChatArgs:
    """The one validated ChatArgs that the builder binds to the deployment."""
    (bound,) = build_app(args)._bound_deployment.init_args
    assert isinstance(bound, ChatArgs)
    return bound


def test_llm_model_reaches_the_replica_and_is_unset_by_default() -> None:
    # Ray Serve LLM (the gpu profile) answers only the model ids it serves: the replica's
    # LLMClient sends this one (handler_base's LLM client tests show it is sent).
    assert ChatArgs().llm_model is None
    assert bound_args({"llm_model": "smollm2-135m-instruct"}).llm_model == "smollm2-135m-instruct"
    assert bound_args({}).llm_model is None
    with pytest.raises(ValidationError):
        ChatArgs(llm_model="")


def test_the_pipeline_is_configured_by_the_rag_argument() -> None:
    args: dict[str, object] = {
        "store": "memory",
        "rag": {
            "prompt_template": "Answer in one line.\n{passages}",
            "no_sources_answer": "Nothing found.",
            "budget": {"context_tokens": 4096, "answer_tokens": 512},
            "chunk_size": 400,
            "chunk_overlap": 40,
            "temperature": 0.3,
        },
    }
    bound = bound_args(args)
    assert bound.store == "memory"
    assert bound.rag.prompt_template == "Answer in one line.\n{passages}"
    assert bound.rag.budget.context_tokens == 4096
    assert (bound.rag.chunk_size, bound.rag.chunk_overlap) == (400, 40)
    # What the Serve config holds comes back the same from its JSON form.
    assert ChatArgs.model_validate_json(bound.model_dump_json()) == bound
    assert bound_args({}).rag.prompt_template == PROMPT_TEMPLATE


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ({"store": "redis"}, "store"),
        ({"rag": {"prompt_template": "no place for passages"}}, "passages"),
        ({"rag": {"chunk_size": 100, "chunk_overlap": 100}}, "chunk_overlap"),
        ({"temperature": 0.5}, "temperature"),  # it lives under `rag`
    ],
)
def test_bad_arguments_are_refused_when_built(args: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        build_app(args)
