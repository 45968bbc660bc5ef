"""The chat application's builder arguments, as the rendered Serve config passes them."""

import pytest
from pydantic import ValidationError

from chat_handler.deployment import ChatArgs, build_app


def test_llm_model_reaches_the_replica_and_is_unset_by_default() -> None:
    # Ray Serve LLM (the gpu profile) answers only the model ids it serves: the replica's
    # LLMClient sends this one (handler_base's LLM client tests show it is sent).
    assert ChatArgs().llm_model is None
    bound = build_app({"llm_model": "smollm2-135m-instruct"})._bound_deployment
    assert bound.init_kwargs["llm_model"] == "smollm2-135m-instruct"
    assert build_app({})._bound_deployment.init_kwargs["llm_model"] is None
    with pytest.raises(ValidationError):
        ChatArgs(llm_model="")
