"""The model services' contract, and the clients and settings that read it."""

import pytest
from pydantic import ValidationError

from handler_base.clients import (
    EmbeddingsClient,
    LLMClient,
    RerankerClient,
    ServiceClient,
    STTClient,
    TTSClient,
)
from handler_base.services import (
    EMBEDDINGS,
    LLM,
    MODEL_SERVICES,
    RERANKER,
    TTS,
    WHISPER,
    ModelService,
)
from handler_base.settings import DEFAULT_SERVE_URL, Settings

CLIENTS: dict[ModelService, type[ServiceClient]] = {
    EMBEDDINGS: EmbeddingsClient,
    RERANKER: RerankerClient,
    LLM: LLMClient,
    WHISPER: STTClient,
    TTS: TTSClient,
}


def test_the_public_names_are_kept() -> None:
    names = {s.name: (s.route_prefix, s.deployment, s.url_env) for s in MODEL_SERVICES}
    assert names == {
        "embeddings": ("/embeddings", "EmbeddingsDeployment", "EMBEDDINGS_URL"),
        "reranker": ("/reranker", "RerankerDeployment", "RERANKER_URL"),
        "llm": ("/llm", "LLMDeployment", "LLM_URL"),
        "whisper": ("/whisper", "WhisperDeployment", "STT_URL"),
        "tts": ("/tts", "TTSDeployment", "TTS_URL"),
    }
    assert set(CLIENTS) == set(MODEL_SERVICES)


@pytest.mark.parametrize("service", MODEL_SERVICES, ids=lambda s: s.name)
def test_each_client_calls_its_services_app_deployment_and_url(
    service: ModelService, monkeypatch: pytest.MonkeyPatch
) -> None:
    for other in MODEL_SERVICES:
        monkeypatch.delenv(other.url_env, raising=False)
    client_type = CLIENTS[service]
    assert client_type.model_service is service
    client = client_type(Settings(_env_file=None))
    assert (client.app, client.deployment) == (service.name, service.deployment)
    assert client.base_url == f"{DEFAULT_SERVE_URL}{service.route_prefix}"


@pytest.mark.parametrize("service", MODEL_SERVICES, ids=lambda s: s.name)
def test_settings_read_each_services_url_from_its_variable(
    service: ModelService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(service.url_env, raising=False)
    default = Settings(_env_file=None)
    assert default.service_url(service) == service.url_under(DEFAULT_SERVE_URL)
    assert default.service_url(service.url_setting) == default.service_url(service)
    monkeypatch.setenv(service.url_env, "http://models.example:9000/x/")
    moved = Settings(_env_file=None)
    assert moved.service_url(service) == "http://models.example:9000/x"
    assert CLIENTS[service](moved).base_url == "http://models.example:9000/x"


def test_handler_clients_keep_their_own_names() -> None:
    from handler_base.clients import ChatClient, VoiceClient

    assert ChatClient.model_service is None
    assert (ChatClient.service, ChatClient.app_name) == ("chat", "chat")
    assert (VoiceClient.service, VoiceClient.deployment_name) == ("voice", "VoiceDeployment")


def test_a_contract_is_checked() -> None:
    with pytest.raises(ValidationError):
        ModelService(name="Bad Name", deployment="D", max_body_bytes=1, url_setting="bad")
    with pytest.raises(ValidationError):
        ModelService(name="ok", deployment="D", max_body_bytes=0, url_setting="ok")
    with pytest.raises(ValidationError, match="extra"):
        ModelService.model_validate({**EMBEDDINGS.model_dump(), "extra": 1})
