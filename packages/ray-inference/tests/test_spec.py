"""Each model module's one spec: contract, builder arguments, builder, resources (no Ray).

The builders only bind: no model is loaded, no cluster is needed.
"""

from importlib import import_module
from typing import Any

import pytest
from pydantic import ValidationError

from handler_base.http import guard_of
from handler_base.services import MODEL_SERVICES
from ray_inference.catalog import MODEL_APPS
from ray_inference.spec import ModelAppSpec, ServiceArgs

CPU_BUILDS: list[ModelAppSpec] = list(MODEL_APPS)
"""Every app builds its own deployment in the cpu profile."""
GPU_BUILDS = [spec for spec in MODEL_APPS if spec.name != "llm"]
"""In the gpu profile the LLM is Ray Serve LLM's app (tested in test_llm.py)."""


def by_id(spec: ModelAppSpec) -> str:
    return spec.name


def test_one_spec_per_model_service_in_the_contracts_order() -> None:
    assert [spec.service for spec in MODEL_APPS] == list(MODEL_SERVICES)


@pytest.mark.parametrize("spec", MODEL_APPS, ids=by_id)
def test_the_import_path_is_the_modules_builder(spec: ModelAppSpec) -> None:
    module_name, _, attribute = spec.import_path.partition(":")
    module = import_module(module_name)
    assert module_name == f"ray_inference.{spec.name}"
    assert getattr(module, attribute) is spec.build_app
    assert module.SPEC is spec
    assert spec.route_prefix == f"/{spec.name}"


@pytest.mark.parametrize("spec", MODEL_APPS, ids=by_id)
def test_the_http_app_takes_the_contracts_body_limit(spec: ModelAppSpec) -> None:
    api = import_module(f"ray_inference.{spec.name}").api
    assert guard_of(api).rules.max_body_bytes == spec.service.max_body_bytes


@pytest.mark.parametrize("spec", CPU_BUILDS, ids=by_id)
def test_the_builder_binds_one_validated_args_object(spec: ModelAppSpec) -> None:
    bound = spec.build_app({"profile": "cpu", "max_queued_requests": 3})._bound_deployment
    assert bound.name == spec.service.deployment
    (args,) = bound.init_args
    assert not bound.init_kwargs
    assert type(args) is spec.args_model
    assert args.profile == "cpu"
    assert bound.max_queued_requests == 3
    assert bound.ray_actor_options == {
        "num_cpus": spec.resources("cpu").num_cpus,
        "num_gpus": 0.0,
    }
    assert args.admission().max_waiting == 3


@pytest.mark.parametrize("spec", GPU_BUILDS, ids=by_id)
def test_the_gpu_profile_gives_the_replica_its_gpu_share(spec: ModelAppSpec) -> None:
    bound = spec.build_app({"profile": "gpu", "resources": {"worker": 0.01}})._bound_deployment
    (args,) = bound.init_args
    assert args.uses_gpu
    assert bound.ray_actor_options == {
        "num_cpus": spec.resources("gpu").num_cpus,
        "num_gpus": spec.resources("gpu").num_gpus,
        "resources": {"worker": 0.01},
    }


@pytest.mark.parametrize("spec", MODEL_APPS, ids=by_id)
def test_an_unknown_argument_is_refused_by_name(spec: ModelAppSpec) -> None:
    with pytest.raises(ValidationError, match=r"not_a_field\s+Extra inputs are not permitted"):
        spec.build_app({"not_a_field": 1})


def test_the_profile_is_read_once_where_the_args_are_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (embeddings,) = (spec for spec in MODEL_APPS if spec.name == "embeddings")
    monkeypatch.setenv("RAY_AI_PROFILE", "gpu")
    (args,) = embeddings.build_app(None)._bound_deployment.init_args
    monkeypatch.setenv("RAY_AI_PROFILE", "cpu")
    # The replica reads the profile the builder saw, whatever its own environment says.
    assert args.profile == "gpu"
    assert args.uses_gpu


def test_overrides_change_only_what_they_name() -> None:
    class Args(ServiceArgs):
        service = MODEL_APPS[0].service
        profile_resources = MODEL_APPS[0].args_model.profile_resources

    base = Args(profile="cpu").deployment_resources()
    changed: dict[str, Any] = {"retry_after_s": 4.0, "resources": {"worker": 0.5}}
    assert Args(profile="cpu", **changed).deployment_resources() == base.model_copy(update=changed)
