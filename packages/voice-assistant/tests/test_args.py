"""The voice application's builder arguments, as the rendered Serve config passes them."""

import pytest
from pydantic import ValidationError

from voice_assistant.deployment import VoiceArgs, build_app


def test_the_builder_binds_one_validated_args_object() -> None:
    bound = build_app({"num_cpus": 0.2, "voice": "joe", "max_queued_requests": 5})._bound_deployment
    (args,) = bound.init_args
    assert not bound.init_kwargs
    assert isinstance(args, VoiceArgs)
    assert args.voice == "joe"
    assert bound.ray_actor_options["num_cpus"] == 0.2
    assert args.admission().max_waiting == 5


def test_an_unknown_argument_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"voicee\s+Extra inputs are not permitted"):
        build_app({"voicee": "joe"})
