"""The bridge application's builder arguments, as the rendered Serve config passes them."""

import pytest
from pydantic import ValidationError

from pipeline_bridge.deployment import BridgeArgs, build_app


def test_both_deployments_get_the_one_args_object_and_its_placement() -> None:
    bound = build_app({"resources": {"head": 0.01}, "connect_timeout_s": 3})._bound_deployment
    args, pipeline = list(bound.init_args)
    assert not bound.init_kwargs
    assert isinstance(args, BridgeArgs)
    assert args.connect_timeout_s == 3
    assert bound.ray_actor_options["resources"] == {"head": 0.01}
    # The pipeline service: one replica, placed as the bridge is, with the same arguments.
    service = pipeline._bound_deployment
    assert service.init_args == (args,)
    assert service.num_replicas == 1
    assert service.ray_actor_options == bound.ray_actor_options


def test_an_unknown_argument_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"bridges\s+Extra inputs are not permitted"):
        build_app({"bridges": {}})
