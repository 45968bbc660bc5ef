"""How ``POST /voice`` bodies become VoiceRequests: multipart, raw audio, JSON."""

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from handler_base.http import platform_app
from handler_base.messages import MAX_AUDIO_BYTES
from handler_base.testing.speech import silence_wav
from voice_assistant.deployment import voice_request_of

WAV = silence_wav(0.5)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = platform_app("parse")

    @app.post("/")
    async def parse(request: Request) -> dict[str, Any]:
        parsed = await voice_request_of(request)
        return {**parsed.model_dump(exclude={"audio"}), "audio_bytes": len(parsed.audio)}

    with TestClient(app) as test_client:
        yield test_client


def test_multipart_file_and_form_fields(client: TestClient) -> None:
    response = client.post(
        "/",
        files={"file": ("q.wav", WAV, "audio/wav")},
        data={"collection": "products", "top_k": "4", "top_n": "2", "request_id": "r-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["audio_bytes"] == len(WAV)
    assert (body["collection"], body["top_k"], body["top_n"]) == ("products", 4, 2)
    assert body["request_id"] == "r-1"


def test_raw_body_with_query_parameters(client: TestClient) -> None:
    pcm = b"\x00\x00" * 1000
    response = client.post(
        "/",
        content=pcm,
        params={"format": "pcm_s16le", "sample_rate": "16000", "response_format": "pcm"},
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["format"], body["sample_rate"], body["audio_bytes"]) == ("pcm_s16le", 16000, 2000)
    assert body["response_format"] == "pcm"
    assert client.post("/", content=WAV, headers={"content-type": "audio/wav"}).status_code == 200


def test_json_body_with_base64_audio(client: TestClient) -> None:
    response = client.post("/", json={"audio": base64.b64encode(WAV).decode(), "voice": "joe"})
    assert response.status_code == 200, response.text
    assert response.json()["voice"] == "joe"
    assert response.json()["audio_bytes"] == len(WAV)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"content": b"", "headers": {"content-type": "audio/wav"}}, "invalid_request"),
        ({"json": {"audio": ""}}, "invalid_request"),
        ({"json": {"audio": "not base64!"}}, "invalid_request"),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, "invalid_request"),
        ({"data": {"collection": "x"}, "files": {"other": ("a", b"b")}}, "invalid_request"),
        ({"content": WAV, "params": {"top_k": "many"}}, "invalid_request"),
        ({"content": WAV, "params": {"colour": "blue"}}, "invalid_request"),
        ({"content": WAV, "params": {"format": "pcm_s16le"}}, "invalid_request"),
        (
            {"content": WAV, "params": {"format": "pcm_s16le", "sample_rate": "100"}},
            "invalid_request",
        ),
        ({"content": b"\x00" * (MAX_AUDIO_BYTES + 1)}, "too_large"),
        (
            {"json": {"audio": base64.b64encode(b"\x00" * (MAX_AUDIO_BYTES + 3)).decode()}},
            "too_large",
        ),
    ],
)
def test_bad_bodies_get_the_error_shape(
    client: TestClient, kwargs: dict[str, Any], code: str
) -> None:
    response = client.post("/", **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] == code, response.text
