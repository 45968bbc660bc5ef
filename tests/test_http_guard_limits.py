"""Every platform app's request guard, as its module or its contract declares it (no Ray).

The guard answers before any route runs, so the real apps can be driven in-process: a body
one byte over a route's limit is ``too_large``, and the app answers the next request.
"""

import httpx
import pytest
from fastapi import FastAPI

from aictl.web import deployment as web
from chat_handler import deployment as chat
from handler_base import deployment as limits
from handler_base.http import guard_of
from handler_base.services import EMBEDDINGS, LLM, RERANKER, TTS, WHISPER
from ray_inference import embeddings, llm, reranker, tts, whisper
from voice_assistant import deployment as voice

ROUTES: list[tuple[str, FastAPI, str, int]] = [
    ("chat", chat.api, "/", limits.CHAT_BODY_BYTES),
    ("chat-openai", chat.api, "/v1/chat/completions", limits.CHAT_BODY_BYTES),
    ("chat-search", chat.api, "/knowledge/search", limits.CHAT_BODY_BYTES),
    ("chat-ingest", chat.api, "/knowledge/documents", limits.INGEST_BODY_BYTES),
    ("voice", voice.api, "/", limits.VOICE_BODY_BYTES),
    ("voice-stream", voice.api, "/stream", limits.VOICE_BODY_BYTES),
    ("embeddings", embeddings.api, "/v1/embeddings", EMBEDDINGS.max_body_bytes),
    ("reranker", reranker.api, "/v1/rerank", RERANKER.max_body_bytes),
    ("llm", llm.api, "/v1/chat/completions", LLM.max_body_bytes),
    ("whisper", whisper.api, "/v1/audio/transcriptions", WHISPER.max_body_bytes),
    ("tts", tts.api, "/v1/audio/speech", TTS.max_body_bytes),
    ("web", web.api, "/", limits.WEB_BODY_BYTES),
]


@pytest.mark.parametrize(
    ("api", "path", "limit"),
    [pytest.param(api, path, limit, id=name) for name, api, path, limit in ROUTES],
)
async def test_one_byte_over_a_routes_limit_is_too_large_and_the_app_answers_on(
    api: FastAPI, path: str, limit: int
) -> None:
    assert guard_of(api).rules.body_limit(path) == limit
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        over = await client.post(path, content=b"x" * (limit + 1))
        assert over.status_code == 413, over.text[:200]
        assert over.json()["error"]["code"] == "too_large"
        assert str(limit) in over.json()["error"]["message"]
        assert (await client.get("/-/healthz")).status_code == 200


def test_the_limits_cover_the_largest_valid_bodies() -> None:
    from handler_base.inference import MAX_TRANSCRIPTION_AUDIO_BYTES
    from handler_base.knowledge import MAX_DOCUMENT_CHARS
    from handler_base.messages import MAX_AUDIO_BYTES

    assert limits.VOICE_BODY_BYTES > MAX_AUDIO_BYTES * 4 / 3
    assert WHISPER.max_body_bytes > MAX_TRANSCRIPTION_AUDIO_BYTES
    # aictl ingest sends 8 files a request: 8 of the largest documents in any UTF-8.
    assert limits.INGEST_BODY_BYTES > 8 * 4 * MAX_DOCUMENT_CHARS
    assert limits.CHAT_BODY_BYTES < limits.INGEST_BODY_BYTES


def test_only_the_web_page_and_health_are_public() -> None:
    page = guard_of(web.api).rules
    assert page.is_public("/")
    assert page.is_public("/static/app.js")
    assert not page.is_public("/nowhere")
    for api in (chat.api, voice.api, embeddings.api, reranker.api, llm.api, whisper.api, tts.api):
        rules = guard_of(api).rules
        assert rules.is_public("/-/healthz")
        assert not rules.is_public("/")
        assert not rules.is_public("/static/app.js")
