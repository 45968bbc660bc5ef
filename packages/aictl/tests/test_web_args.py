"""The web application's builder arguments, as the rendered Serve config passes them."""

import pytest
from pydantic import ValidationError

from aictl.web.deployment import WebArgs, build_app


def test_the_builder_binds_one_validated_args_object() -> None:
    bound = build_app({"resources": {"head": 0.01}})._bound_deployment
    (args,) = bound.init_args
    assert not bound.init_kwargs
    assert isinstance(args, WebArgs)
    assert bound.ray_actor_options == {"num_cpus": 0.05, "num_gpus": 0, "resources": {"head": 0.01}}


def test_an_unknown_argument_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"port\s+Extra inputs are not permitted"):
        build_app({"port": 80})
