import pytest

from ray_inference.catalog import MODEL_APPS
from ray_inference.profiles import PROFILES, DeploymentResources, ProfileResources, current_profile


def test_cpu_profile_fits_two_cores_beside_the_handlers() -> None:
    cpu = [spec.resources("cpu") for spec in MODEL_APPS]
    cpu_total = sum(r.num_cpus * r.num_replicas for r in cpu)
    assert cpu_total <= 1.5, "leave room on 2 cores for the handlers and the bridge"
    assert all(r.num_gpus == 0 for r in cpu)


def test_gpu_profile_keeps_the_decision_record_fractions() -> None:
    gpus = {spec.name: spec.resources("gpu").num_gpus for spec in MODEL_APPS}
    assert gpus == {"llm": 0.95, "whisper": 0.5, "tts": 0.5, "embeddings": 0.8, "reranker": 0.8}


def test_deployment_options_bound_the_queue() -> None:
    (llm,) = (spec for spec in MODEL_APPS if spec.name == "llm")
    options = llm.resources("cpu").deployment_options()
    assert options["ray_actor_options"] == {"num_cpus": 0.4, "num_gpus": 0.0}
    assert options["max_queued_requests"] >= options["max_ongoing_requests"] >= 1


def test_profile_resources_name_both_profiles() -> None:
    one = DeploymentResources(num_cpus=1, max_ongoing_requests=1, max_queued_requests=1)
    both = ProfileResources(cpu=one, gpu=one.model_copy(update={"num_gpus": 1.0}))
    assert [both.of(profile).uses_gpu for profile in PROFILES] == [False, True]
    with pytest.raises(ValueError, match="gpu"):
        ProfileResources.model_validate({"cpu": one})


def test_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AI_PROFILE", raising=False)
    assert current_profile() == "cpu"
    monkeypatch.setenv("RAY_AI_PROFILE", "GPU")
    assert current_profile() == "gpu"
    monkeypatch.setenv("RAY_AI_PROFILE", "tpu")
    with pytest.raises(ValueError, match="expected one of"):
        current_profile()
