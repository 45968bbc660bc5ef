import pytest

from ray_inference.profiles import PROFILES, current_profile, resources

SERVICES = {"embeddings", "reranker", "llm", "whisper", "tts"}


def test_both_profiles_cover_every_service() -> None:
    assert set(PROFILES["cpu"]) == SERVICES
    assert set(PROFILES["gpu"]) == SERVICES


def test_cpu_profile_fits_two_cores_beside_the_handlers() -> None:
    cpu_total = sum(r.num_cpus * r.num_replicas for r in PROFILES["cpu"].values())
    assert cpu_total <= 1.5, "leave room on 2 cores for the handlers and the bridge"
    assert all(r.num_gpus == 0 for r in PROFILES["cpu"].values())


def test_gpu_profile_keeps_the_decision_record_fractions() -> None:
    gpus = {name: r.num_gpus for name, r in PROFILES["gpu"].items()}
    assert gpus == {"llm": 0.95, "whisper": 0.5, "tts": 0.5, "embeddings": 0.8, "reranker": 0.8}


def test_deployment_options_bound_the_queue() -> None:
    options = resources("llm", "cpu").deployment_options()
    assert options["ray_actor_options"] == {"num_cpus": 0.4, "num_gpus": 0.0}
    assert options["max_queued_requests"] >= options["max_ongoing_requests"] >= 1


def test_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AI_PROFILE", raising=False)
    assert current_profile() == "cpu"
    monkeypatch.setenv("RAY_AI_PROFILE", "GPU")
    assert current_profile() == "gpu"
    monkeypatch.setenv("RAY_AI_PROFILE", "tpu")
    with pytest.raises(ValueError, match="expected one of"):
        current_profile()
